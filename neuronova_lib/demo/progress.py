"""A progress line for long runs: tqdm when it is installed, a plain stderr line otherwise.

tqdm is not a dependency of NeuroNova; writing fifty full-size cases takes a
few minutes, and the user should see that something is happening either way.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """Counts finished steps of a known total and shows them.

    Parameters
    ----------
    total : int
        Number of steps.
    description : str
        Shown before the count.
    enabled : bool
        Show nothing when false (library use, tests).
    stream : TextIO, optional
        Where to write; default ``sys.stderr``.
    """

    def __init__(
        self, total: int, description: str, enabled: bool = True, stream: TextIO | None = None,
        unit: str = "case",
    ) -> None:
        self.total = total
        self.description = description
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = enabled
        self._bar = _tqdm(total, description, self._stream, unit) if enabled else None

    def step(self, note: str = "") -> None:
        """Mark one more step done; ``note`` says what it was."""
        self.done += 1
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(1)
            return
        interactive = getattr(self._stream, "isatty", lambda: False)()
        line = f"{self.description}: {self.done}/{self.total} {note}".rstrip()
        if interactive:
            end = "\n" if self.done >= self.total else ""
            self._stream.write("\r" + line.ljust(72) + end)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Finish the bar (a no-op for the plain line)."""
        if self._bar is not None:
            self._bar.close()


def _tqdm(total: int, description: str, stream: TextIO, unit: str) -> Any:
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, file=stream, unit=unit)
