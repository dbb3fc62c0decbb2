#!/usr/bin/env python3
"""HTJ2K on MR frames: speed of each codec, against native OpenJPH, and what it saves.

All numbers come from one run on one set of frames, so ratios between them
hold even on a busy machine:

* ``speed_one_core`` — encode and decode frames/s (and ns per pixel) for each
  available codec: NeuroNova's :func:`~neuronova_lib.htj2k.encode` /
  :func:`~neuronova_lib.htj2k.decode` (all checks included), each HTJ2K decoder
  backend called directly, reduced-resolution decoding, and classic JPEG 2000
  lossless (pylibjpeg-openjpeg, pydicom's own J2K codec; and imagecodecs'
  OpenJPEG). Every call runs on one thread (OpenJPEG is told ``numthreads=1``);
  the process is not pinned, so that on a shared machine the scheduler can
  keep it off a core another job is using.
* ``decode_scaling`` — frames/s with 1 and 2 worker processes on both cores.
* ``native_openjph`` — the limit: Debian's ``ojph_compress``/``ojph_expand``
  on one large mosaic of the same frames (so process start-up is negligible),
  and the bundled OpenJPH decoding that mosaic in one call — timed in turn
  with NeuroNova's per-frame Python decode of the same frames, pass by pass,
  so that load from other jobs hits both sides alike.
* ``compression`` — lossless ratio (raw bytes / coded bytes) of HTJ2K against
  raw, deflate (zlib level 6, as the Deflated transfer syntax), RLE Lossless
  and JPEG 2000 lossless.
* ``tuning`` — ratio and decode speed by wavelet decomposition levels, and
  ratio by code-block size (via ``ojph_compress``: imagecodecs does not expose
  the code-block size).
* ``lossy`` — ``…4.203`` ratio and error by quality.
* ``goals`` — the issue's targets, measured.

Frames: 16-bit MR slices (uint16, 12 bits stored) of NeuroNova's synthetic
demo phantom: the BraTS grid (240×240×155, 1 mm) and the same phantom rendered
natively (not upsampled) on a 512×512×24 grid at 0.47×0.47×6.5 mm.

Run: ``.venv/bin/python benchmarks/htj2k.py > htj2k.json`` (about 1-2 minutes;
progress on stderr). ``--frames`` and ``--repeat`` trade time for noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuronova_lib import htj2k
from neuronova_lib.demo import BRATS_SHAPE, BRATS_SPACING, build_case
from neuronova_lib.htj2k import backends

BITS_STORED = 12
GRIDS = {
    "512x512": ((512, 512, 24), (0.47, 0.47, 6.5)),
    "240x240": (BRATS_SHAPE, BRATS_SPACING),
}
CHANNELS = ("t1", "t1c", "t2", "flair")


def log(message: str) -> None:
    print(f"[htj2k-bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- frames


def build_frames(per_size: int) -> tuple[dict[str, list[np.ndarray]], dict[str, str]]:
    """Slices through the middle of the brain, cycling over the four channels."""
    frames: dict[str, list[np.ndarray]] = {}
    provenance: dict[str, str] = {}
    for name, (shape, spacing) in GRIDS.items():
        started = time.perf_counter()
        case = build_case(0, 1, shape, spacing)
        depth = shape[2]
        # the middle 2/3 of the slices hold the brain; spread the picks over them
        ks = np.linspace(depth // 6, depth - depth // 6 - 1, max(1, per_size // 4)).astype(int)
        picked = []
        for k in ks:
            for channel in CHANNELS:
                picked.append(np.ascontiguousarray(case.channels[channel][:, :, k].T))
        frames[name] = picked[:per_size]
        provenance[name] = (
            f"build_case(seed=0, index=1, shape={shape}, spacing={spacing}): "
            f"{len(frames[name])} slices k={sorted({int(k) for k in ks})} of {', '.join(CHANNELS)}"
            f"{' (rendered natively on this grid, not upsampled)' if name == '512x512' else ''}"
        )
        log(f"built {name} frames in {time.perf_counter() - started:.1f} s")
    return frames, provenance


# ---------------------------------------------------------------- timing


def timed_passes(items: Sequence[Any], fn: Callable[[Any], object], repeat: int) -> float:
    """Median seconds for one pass of ``fn`` over ``items`` (after a warm-up pass)."""
    for item in items[:2]:
        fn(item)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            fn(item)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def speed(items: Sequence[Any], fn: Callable[[Any], object], repeat: int, pixels: int) -> dict:
    seconds = timed_passes(items, fn, repeat)
    return {
        "frames_per_s": round(len(items) / seconds, 1),
        "ms_per_frame": round(1e3 * seconds / len(items), 3),
        "ns_per_pixel": round(1e9 * seconds / (len(items) * pixels), 2),
    }


# ---------------------------------------------------------------- codecs under test


def j2k_encode(frame: np.ndarray) -> bytes:
    import openjpeg

    return bytes(openjpeg.encode(frame, bits_stored=BITS_STORED, photometric_interpretation=2))


def rle_encode(frame: np.ndarray) -> bytes:
    from pydicom.pixels.encoders import RLELosslessEncoder

    return RLELosslessEncoder.encode(
        frame,
        rows=frame.shape[0],
        columns=frame.shape[1],
        samples_per_pixel=1,
        bits_allocated=16,
        bits_stored=BITS_STORED,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
    )


def compression(frames: list[np.ndarray]) -> dict:
    raw = sum(f.nbytes for f in frames)
    sizes = {
        "raw": raw,
        "deflate": sum(len(zlib.compress(f.tobytes(), 6)) for f in frames),
        "rle_lossless": sum(len(rle_encode(f)) for f in frames),
        "jpeg2000_lossless": sum(len(j2k_encode(f)) for f in frames),
        "htj2k_lossless": sum(len(htj2k.encode(f, bits_stored=BITS_STORED)) for f in frames),
        "htj2k_lossless_rpcl": sum(
            len(htj2k.encode(f, syntax=htj2k.HTJ2K_LOSSLESS_RPCL, bits_stored=BITS_STORED))
            for f in frames
        ),
    }
    ratios = {k: round(raw / v, 4) for k, v in sizes.items()}
    return {
        "bytes": sizes,
        "ratio": ratios,
        "htj2k_vs_jpeg2000": round(ratios["htj2k_lossless"] / ratios["jpeg2000_lossless"], 4),
        "htj2k_rpcl_vs_jpeg2000": round(
            ratios["htj2k_lossless_rpcl"] / ratios["jpeg2000_lossless"], 4
        ),
    }


def one_core_speeds(frames: list[np.ndarray], repeat: int) -> dict:
    import imagecodecs
    import openjpeg

    pixels = frames[0].size
    ht = [htj2k.encode(f, bits_stored=BITS_STORED) for f in frames]
    j2k = [j2k_encode(f) for f in frames]
    out: dict[str, Any] = {"encode": {}, "decode": {}}
    enc = out["encode"]

    def ours(frame: np.ndarray) -> bytes:
        return htj2k.encode(frame, bits_stored=BITS_STORED)

    def bare(frame: np.ndarray) -> bytes:
        return bytes(imagecodecs.htj2k_encode(frame, reversible=True))

    enc["htj2k neuronova.encode (openjph + checks)"] = speed(frames, ours, repeat, pixels)
    enc["htj2k imagecodecs.htj2k_encode (bare call)"] = speed(frames, bare, repeat, pixels)
    enc["jpeg2000 pylibjpeg-openjpeg"] = speed(frames, j2k_encode, max(1, repeat // 2), pixels)
    dec = out["decode"]
    dec["htj2k neuronova.decode (auto)"] = speed(ht, htj2k.decode, repeat, pixels)
    for backend in backends.decoders():
        name = backend.NAME
        dec[f"htj2k backend {name} (bare)"] = speed(
            ht, partial(backend.decode, reduce=0), repeat, pixels
        )
        dec[f"htj2k neuronova.decode backend={name}"] = speed(
            ht, partial(htj2k.decode, backend=name), repeat, pixels
        )
    for reduce in (1, 2):
        dec[f"htj2k neuronova.decode reduce={reduce}"] = speed(
            ht, partial(htj2k.decode, reduce=reduce), repeat, pixels
        )
    dec["jpeg2000 pylibjpeg-openjpeg"] = speed(
        j2k, lambda c: openjpeg.decode(c, j2k_format=0), max(1, repeat // 2), pixels
    )
    dec["jpeg2000 imagecodecs-openjpeg"] = speed(
        j2k, lambda c: imagecodecs.jpeg2k_decode(c, numthreads=1), max(1, repeat // 2), pixels
    )
    return out


def _decode_ht_size(codestream: bytes) -> int:
    return int(htj2k.decode(codestream).size)


def _decode_j2k_size(codestream: bytes) -> int:
    import openjpeg

    return int(openjpeg.decode(codestream, j2k_format=0).size)


def decode_scaling(frames: list[np.ndarray], repeat: int) -> dict:
    """Frames/s decoding in 1 and 2 worker processes, passes interleaved.

    Processes, not threads: neuronova_lib.htj2k serialises OpenJPH calls within a
    process (imagecodecs' wrapper is not thread-safe), so parallel decoding is
    per process — as Dask workers and the client's process pool do it.
    """
    ht = [htj2k.encode(f, bits_stored=BITS_STORED) for f in frames] * 4
    j2k = [j2k_encode(f) for f in frames] * 2
    out: dict[str, Any] = {
        "cpus": len(os.sched_getaffinity(0)),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    for label, items, fn in (
        ("htj2k neuronova.decode", ht, _decode_ht_size),
        ("jpeg2000 pylibjpeg-openjpeg", j2k, _decode_j2k_size),
    ):
        times: dict[int, list[float]] = {1: [], 2: []}
        with ProcessPoolExecutor(1) as one, ProcessPoolExecutor(2) as two:
            list(one.map(fn, items[:4]))
            list(two.map(fn, items[:4]))
            for _ in range(repeat):
                for threads, pool in ((1, one), (2, two)):
                    started = time.perf_counter()
                    list(pool.map(fn, items, chunksize=8))
                    times[threads].append(time.perf_counter() - started)
        row = {
            f"{n}_process_frames_per_s": round(len(items) / statistics.median(t), 1)
            for n, t in times.items()
        }
        row["speedup"] = round(row["2_process_frames_per_s"] / row["1_process_frames_per_s"], 2)
        out[label] = row
    return out


# ---------------------------------------------------------------- native OpenJPH


def mosaic(frames: list[np.ndarray]) -> np.ndarray:
    """Tile all the frames, and nothing else, into one near-square image."""
    n = len(frames)
    per_row = min((d for d in range(1, n + 1) if n % d == 0), key=lambda d: abs(d - n / d))
    rows = [np.concatenate(frames[i : i + per_row], axis=1) for i in range(0, n, per_row)]
    return np.concatenate(rows, axis=0)


def _run(cmd: list[str]) -> tuple[float, float | None, str]:
    """Wall seconds, the tool's own 'Elapsed time', and its output."""
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {text}")
    found = re.search(r"Elapsed time = ([0-9.]+)", text)
    return wall, float(found.group(1)) if found else None, text


def native_openjph(frames: list[np.ndarray], repeat: int, work: Path) -> dict:
    import imagecodecs

    compress, expand = shutil.which("ojph_compress"), shutil.which("ojph_expand")
    if not compress or not expand:
        return {"skipped": "install the Debian package openjph-tools for ojph_compress/ojph_expand"}
    big = mosaic(frames)
    pgm, j2c, out = work / "mosaic.pgm", work / "mosaic.j2c", work / "out.raw"
    with pgm.open("wb") as fh:
        fh.write(b"P5\n%d %d\n%d\n" % (big.shape[1], big.shape[0], (1 << BITS_STORED) - 1))
        fh.write(big.astype(">u2").tobytes())
    enc_cmd = [
        compress,
        "-i",
        str(pgm),
        "-o",
        str(j2c),
        "-reversible",
        "true",
        "-num_decomps",
        str(htj2k.DECOMPOSITIONS),
    ]
    dec_cmd = [expand, "-i", str(j2c), "-o", str(out)]
    _run(enc_cmd)
    codestream = j2c.read_bytes()
    coded = [htj2k.encode(f, bits_stored=BITS_STORED) for f in frames]
    series: dict[str, list[float]] = {
        k: []
        for k in (
            "ojph_compress_wall",
            "ojph_expand_wall",
            "ojph_expand_own_timer",
            "bundled_openjph_mosaic_decode",
            "bundled_openjph_mosaic_encode",
            "python_neuronova_decode_per_frame",
            "python_neuronova_encode_per_frame",
        )
    }
    for item in coded[:2]:
        htj2k.decode(item)
    for _ in range(repeat):  # interleaved: each pass of each side sees the same load
        wall, _, _ = _run(enc_cmd)
        series["ojph_compress_wall"].append(wall)
        wall, own, _ = _run(dec_cmd)
        series["ojph_expand_wall"].append(wall)
        if own is not None:
            series["ojph_expand_own_timer"].append(own)
        series["bundled_openjph_mosaic_decode"].append(
            timed_passes([codestream], imagecodecs.htj2k_decode, 1)
        )
        series["bundled_openjph_mosaic_encode"].append(
            timed_passes([big], lambda a: imagecodecs.htj2k_encode(a, reversible=True), 1)
        )
        series["python_neuronova_decode_per_frame"].append(timed_passes(coded, htj2k.decode, 1))
        series["python_neuronova_encode_per_frame"].append(
            timed_passes(frames, lambda f: htj2k.encode(f, bits_stored=BITS_STORED), 1)
        )
    decoded = np.fromfile(out, dtype="<u2").reshape(big.shape)
    if not np.array_equal(decoded, big):
        raise RuntimeError("ojph_expand did not reproduce the mosaic")
    pixels = big.size
    ns = {
        f"{k}_ns_per_pixel": round(1e9 * statistics.median(v) / pixels, 2)
        for k, v in series.items()
        if v
    }
    python = ns["python_neuronova_decode_per_frame_ns_per_pixel"]
    return {
        "tool": "Debian openjph-tools " + _debian_version("openjph-tools"),
        "mosaic_shape": list(big.shape),
        "mosaic_frames": len(frames),
        "mosaic_ratio": round(big.nbytes / len(codestream), 4),
        **ns,
        "python_decode_over_ojph_expand_wall": round(
            python / ns["ojph_expand_wall_ns_per_pixel"], 3
        ),
        "python_decode_over_ojph_expand_own_timer": round(
            python / ns["ojph_expand_own_timer_ns_per_pixel"], 3
        )
        if "ojph_expand_own_timer_ns_per_pixel" in ns
        else None,
        "python_decode_over_bundled_openjph_mosaic": round(
            python / ns["bundled_openjph_mosaic_decode_ns_per_pixel"], 3
        ),
        "note": "ojph_* wall time includes process start-up and writing the raw output to "
        f"{'tmpfs' if str(work).startswith('/dev/shm') else 'disk'}; its own timer "
        '("Elapsed time") excludes start-up. The bundled OpenJPH is newer than '
        "Debian's tools.",
    }


def _debian_version(package: str) -> str:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "?"


def code_block_sizes(frames: list[np.ndarray], work: Path) -> dict:
    compress = shutil.which("ojph_compress")
    if not compress:
        return {"skipped": "install openjph-tools"}
    big = mosaic(frames)
    pgm = work / "blocks.pgm"
    with pgm.open("wb") as fh:
        fh.write(b"P5\n%d %d\n%d\n" % (big.shape[1], big.shape[0], (1 << BITS_STORED) - 1))
        fh.write(big.astype(">u2").tobytes())
    out = {}
    for size in ("64,64", "32,32", "128,32", "32,128", "16,16"):
        j2c = work / f"b{size.replace(',', 'x')}.j2c"
        _run(
            [
                compress,
                "-i",
                str(pgm),
                "-o",
                str(j2c),
                "-reversible",
                "true",
                "-num_decomps",
                str(htj2k.DECOMPOSITIONS),
                "-block_size",
                "{" + size + "}",
            ]
        )
        out[size.replace(",", "x")] = round(big.nbytes / j2c.stat().st_size, 4)
    return {"ratio_by_code_block_size": out}


def decomposition_levels(frames: list[np.ndarray], repeat: int) -> dict:
    import imagecodecs

    raw = sum(f.nbytes for f in frames)
    pixels = frames[0].size
    out = {}
    for levels in range(2, 8):
        coded = [
            bytes(imagecodecs.htj2k_encode(f, reversible=True, resolutions=levels)) for f in frames
        ]
        out[str(levels)] = {
            "ratio": round(raw / sum(map(len, coded)), 4),
            "decode_ns_per_pixel": speed(coded, imagecodecs.htj2k_decode, repeat, pixels)[
                "ns_per_pixel"
            ],
        }
    return out


def lossy(frames: list[np.ndarray]) -> dict:
    raw = sum(f.nbytes for f in frames)
    out = {}
    for quality in (60, 80, 90, 100):
        coded = [
            htj2k.encode(f, syntax=htj2k.HTJ2K_LOSSY, quality=quality, bits_stored=BITS_STORED)
            for f in frames
        ]
        errors = [htj2k.decode(c).astype(np.int32) - f for c, f in zip(coded, frames)]
        mse = float(np.mean([np.mean(e.astype(np.float64) ** 2) for e in errors]))
        psnr = 10 * np.log10(((1 << BITS_STORED) - 1) ** 2 / mse) if mse else float("inf")
        out[str(quality)] = {
            "ratio": round(raw / sum(map(len, coded)), 3),
            "max_abs_error": int(max(np.abs(e).max() for e in errors)),
            "psnr_db_12bit": round(psnr, 2),
        }
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="frames per size (default 32)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes (median; default 5)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    frames, provenance = build_frames(args.frames)
    work = Path(
        tempfile.mkdtemp(
            prefix="htj2k-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None
        )
    )
    result: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "backends": htj2k.backend_report(),
        "frames": {
            name: {
                "count": len(fs),
                "shape": list(fs[0].shape),
                "dtype": "uint16",
                "bits_stored": BITS_STORED,
                "source": provenance[name],
            }
            for name, fs in frames.items()
        },
        "decompositions": htj2k.DECOMPOSITIONS,
    }
    try:
        for name, fs in frames.items():
            log(f"{name}: compression ratios")
            result.setdefault("compression", {})[name] = compression(fs)
            log(f"{name}: one-core speeds")
            result.setdefault("speed_one_core", {})[name] = one_core_speeds(fs, args.repeat)
            log(f"{name}: decomposition levels")
            result.setdefault("tuning", {}).setdefault("decomposition_levels", {})[name] = (
                decomposition_levels(fs, args.repeat)
            )
        log("native OpenJPH on a mosaic")
        result["native_openjph"] = {
            name: native_openjph(fs, args.repeat, work) for name, fs in frames.items()
        }
        result["tuning"]["code_block_size_512x512"] = code_block_sizes(frames["512x512"], work)
        log("lossy sweep")
        result["lossy_512x512"] = lossy(frames["512x512"])
        log("decode scaling on all cores")
        result["decode_scaling_512x512"] = decode_scaling(frames["512x512"], args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["goals"] = goals(result)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))
    return 0


def goals(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in result["speed_one_core"]:
        dec = result["speed_one_core"][name]["decode"]
        ours = dec["htj2k neuronova.decode (auto)"]["ns_per_pixel"]
        j2k = dec["jpeg2000 pylibjpeg-openjpeg"]["ns_per_pixel"]
        j2k_best = min(
            dec["jpeg2000 pylibjpeg-openjpeg"]["ns_per_pixel"],
            dec["jpeg2000 imagecodecs-openjpeg"]["ns_per_pixel"],
        )
        ratio = result["compression"][name]["htj2k_vs_jpeg2000"]
        row: dict[str, Any] = {
            "decode_speedup_vs_jpeg2000_pylibjpeg": round(j2k / ours, 2),
            "decode_speedup_vs_best_jpeg2000": round(j2k_best / ours, 2),
            "goal_about_10x_faster_than_jpeg2000": j2k_best / ours >= 10,
            "lossless_ratio_vs_jpeg2000": ratio,
            "goal_ratio_at_least_0.90": ratio >= 0.90,
        }
        native = result["native_openjph"][name]
        if "skipped" not in native:
            row["python_decode_over_ojph_expand_wall"] = native[
                "python_decode_over_ojph_expand_wall"
            ]
            row["python_decode_over_ojph_expand_own_timer"] = native[
                "python_decode_over_ojph_expand_own_timer"
            ]
            row["python_decode_over_bundled_openjph_mosaic"] = native[
                "python_decode_over_bundled_openjph_mosaic"
            ]
            row["goal_within_1.2x_of_native_openjph"] = (
                native["python_decode_over_ojph_expand_wall"] <= 1.2
                and native["python_decode_over_bundled_openjph_mosaic"] <= 1.2
            )
        out[name] = row
    return out


if __name__ == "__main__":
    sys.exit(main())
