"""What a bulk run tells people and programs: a progress bar, a summary, a JSON report.

The report lists every failure with its reason (and every skipped instance;
a file refused by the ingest gate or conflicting with Orthanc names its
quarantine entry, ``quarantine_sha256``),
read back from the manifest a page at a time and written as it is read, so a
run with millions of instances still writes it in bounded memory.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from .manifest import Manifest
from .results import State

MB = 1e6


@dataclass
class Tally:
    """Running totals of one run's results (client side)."""

    processed: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def add(self, results: Iterable[dict[str, Any]]) -> None:
        for r in results:
            self.processed += 1
            if r["state"] == State.DONE:
                self.done += 1
                self.bytes_in += int(r.get("bytes_in") or 0)
                self.bytes_out += int(r.get("bytes_out") or 0)
            elif r["state"] == State.SKIPPED:
                self.skipped += 1
            else:
                self.failed += 1

    @property
    def ratio(self) -> float:
        """Bytes in over bytes out for the instances stored (0 before the first)."""
        return self.bytes_in / self.bytes_out if self.bytes_out else 0.0


@dataclass
class RunSummary:
    """How a bulk run ended; also the head of its JSON report.

    Attributes
    ----------
    run_id : str
    status : str
        ``complete`` (nothing failed, nothing left), ``failures`` (some
        instances failed; the run itself finished), ``interrupted`` (stopped
        before the end: a re-run resumes) or ``dry_run``.
    sources : list of str
    counts : dict
        Instances listed by this run, by manifest state after it.
    listed : int
        Distinct instances in the sources.
    already_finished : int
        Of those, ``done`` or ``skipped`` before this run (nothing to do).
    this_run : dict
        What this run processed: ``processed``, ``done``, ``skipped``,
        ``failed``, ``bytes_in``, ``bytes_out`` (instances stored),
        ``ratio``, ``instances_per_s``, ``mb_per_s`` (MB in, stored instances),
        ``batches_resubmitted`` (after a worker died or was restarted).
    failure_reasons, skip_reasons : dict
        Instances listed by this run that are ``failed`` / ``skipped``, by reason.
    timings : dict
        Seconds: ``list`` (walking the sources), ``cluster`` (starting or
        connecting), ``process`` (the Dask part), ``total``.
    scheduler, dashboard : str or None
        The scheduler address and the Dask dashboard link.
    workers : int
        Worker threads when the run began.
    manifest, report : str or None
        Where they are.
    backups_left : int
        Originals of Orthanc instances still in the backup folder (each is
        named in ``failures``); 0 after a clean run.
    """

    run_id: str
    status: str
    sources: list[str]
    counts: dict[str, int]
    listed: int
    already_finished: int
    this_run: dict[str, Any]
    failure_reasons: dict[str, int]
    skip_reasons: dict[str, int]
    timings: dict[str, float]
    scheduler: str | None = None
    dashboard: str | None = None
    workers: int = 0
    manifest: str | None = None
    report: str | None = None
    backup_dir: str | None = None
    backups_left: int = 0

    @property
    def exit_code(self) -> int:
        """0: all good; 1: some instances failed; 130: interrupted (as after Ctrl-C)."""
        if self.status == "interrupted":
            return 130
        return 1 if self.counts.get(State.FAILED, 0) else 0

    def line(self) -> str:
        """The one-line summary printed at the end."""
        c, t = self.counts, self.this_run
        if self.status == "dry_run":
            todo = c[State.PENDING] + c[State.FAILED]
            return (f"dry run: {self.listed} instances listed, {todo} to process "
                    f"({t['bytes_in'] / MB:.1f} MB), {self.already_finished} already finished; "
                    "nothing was changed")
        failed = ", ".join(f"{r} {n}" for r, n in sorted(self.failure_reasons.items()))
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(self.skip_reasons.items()))
        text = (
            f"transcode {self.status}: {self.listed} instances — {c[State.DONE]} done, "
            f"{c[State.SKIPPED]} skipped" + (f" ({skipped})" if skipped else "")
            + f", {c[State.FAILED]} failed" + (f" ({failed})" if failed else "")
            + f", {c[State.PENDING]} pending; this run: {t['processed']} processed, "
            f"{t['bytes_in'] / MB:.1f} MB -> {t['bytes_out'] / MB:.1f} MB "
            f"(ratio {t['ratio']:.2f}) in {self.timings['process']:.1f} s "
            f"({t['instances_per_s']:.1f} inst/s, {t['mb_per_s']:.1f} MB/s)"
        )
        if self.backups_left:
            text += f"; {self.backups_left} original(s) kept in {self.backup_dir}"
        if self.report:
            text += f"; report: {self.report}"
        return text


class Progress:
    """A tqdm bar on stderr: instances, MB in and out, ratio, rate."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._started = 0.0

    def message(self, text: str) -> None:
        """A line above the bar (or alone when there is none)."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self._started = time.perf_counter()
        self._bar = tqdm(total=total, unit="inst", file=self.stream, dynamic_ncols=True,
                         smoothing=0.1, desc="transcode")

    def update(self, count: int, tally: Tally) -> None:
        if self._bar is None:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"in {tally.bytes_in / MB:.1f} MB, out {tally.bytes_out / MB:.1f} MB, "
            f"ratio {tally.ratio:.2f}, {tally.bytes_in / MB / elapsed:.1f} MB/s, "
            f"failed {tally.failed}",
            refresh=False,
        )
        self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


_ROW_FIELDS = ("key", "source", "locator", "reason", "message", "sop_instance_uid",
               "orthanc_id", "attempts", "backup", "quarantine_sha256", "bytes_in")


def write_report(path: Path, summary: RunSummary, manifest: Manifest) -> Path:
    """Write the JSON report: the summary, then every failure and every skip.

    The file is written beside its final name and renamed, so a reader never
    sees half a report.

    Parameters
    ----------
    path : Path
        Destination (its folder is created).
    summary : RunSummary
    manifest : Manifest
        Read for the rows of ``summary.run_id``.

    Returns
    -------
    Path
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    head = asdict(summary)
    head["exit_code"] = summary.exit_code
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(head, indent=1)[:-2])  # reopen the object for the lists
            for name, state in (("failures", State.FAILED), ("skipped", State.SKIPPED)):
                out.write(f',\n "{name}": [')
                first = True
                for row in manifest.rows(summary.run_id, [state.value]):
                    entry = {k: row.get(k) for k in _ROW_FIELDS}
                    out.write(("\n  " if first else ",\n  ") + json.dumps(entry))
                    first = False
                out.write("\n ]")
            out.write("\n}\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
