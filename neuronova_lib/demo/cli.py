"""``neuronova demo-data``: write synthetic brain-tumour cases as DICOM and NIfTI.

The lead wires :func:`main` into the ``neuronova`` command; it can also run
alone: ``python -m neuronova_lib.demo.cli --cases 3 --out demo --size small``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def build_parser(prog: str = "neuronova demo-data") -> argparse.ArgumentParser:
    """Argument parser of the command (exposed so a parent CLI can reuse it)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Write synthetic BraTS-style brain-tumour MRI cases (T1, T1c, T2, FLAIR) as "
            "DICOM studies, with NIfTI copies, ground-truth labels and a manifest. "
            "Demonstration data, not for clinical use."
        ),
    )
    parser.add_argument("--cases", type=int, default=5, help="number of cases (default 5)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed; same seed, same bytes (default 0)"
    )
    parser.add_argument(
        "--size",
        choices=("brats", "small"),
        default="brats",
        help="brats: 240x240x155 at 1 mm (default); small: 64x64x40 at ~3.8 mm, for tests",
    )
    parser.add_argument(
        "--skull-stripped", action="store_true", help="leave out skull and scalp, as in BraTS"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace demo data already in --out"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        0 on success, 2 for bad arguments or an output folder in the way,
        1 when building a case failed.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error(f"--cases must be at least 1, got {args.cases}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")

    from . import SIZES, write_demo_cases  # heavy imports only when the command runs

    shape, spacing = SIZES[args.size]
    started = time.perf_counter()
    try:
        written = write_demo_cases(
            args.out,
            cases=args.cases,
            seed=args.seed,
            shape=shape,
            spacing=spacing,
            skull_stripped=args.skull_stripped,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as exc:
        logger.debug("demo data failed", exc_info=True)
        print(f"error: could not write the demo data: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - started
    files = sum(len(list(d.glob("*.dcm"))) for c in written for d in c.dicom_dirs.values())
    print(
        f"wrote {len(written)} synthetic case(s) ({args.size}: {'x'.join(map(str, shape))} "
        f"voxels, {files} DICOM files) to {args.out} in {elapsed:.1f} s"
    )
    print(f"manifest: {Path(args.out) / 'manifest.json'}")
    for case in written:
        print(f"  {case.case_id}  {case.patient_id}  study {case.study_instance_uid}")
    print("synthetic demonstration data - not for clinical use")
    return 0


if __name__ == "__main__":
    sys.exit(main())
