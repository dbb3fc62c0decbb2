#!/usr/bin/env python3
"""Time to load a 155-slice series through nginx + guard with concurrency, against local files.

The question: how much does fetching a series over the platform's DICOMweb
(``Client.load_series``: one metadata request, then one frame request per
slice, ``max_workers`` at a time, each frame decoded as it arrives) cost
against reading and decoding the same files from a local disk
(``neuronova_lib.volume.load_dicom_files``, same decoder table)? Goal: the
remote load takes at most 1.5× the local one.

It starts the real platform (Orthanc + NeuroNova's WADO plugin, guard, API,
nginx) on free loopback ports in a temporary home, writes one BraTS-size demo
case (240×240×155, 16-bit), stores its T1 series, and measures:

* ``local`` — ``load_dicom_files``: pydicom reads the 155 files, the geometry is
  built from their metadata and the frames are decoded (page cache warm); and
  ``local_read_decode_only``, the floor: read and decode, no metadata or geometry;
* ``remote`` — ``load_series`` at several concurrency levels (``max_workers``),
  after one warm-up load each, with seconds, frames/s and ratio to local; and
  ``remote_transport_series``: ``transport="series"``, the whole series in one
  streamed WADO-RS request (instances as stored);
* ``htj2k`` — the same with the series transcoded to HTJ2K lossless (frames
  served as stored, decoded by ``neuronova_lib.htj2k`` in the client), if the
  codec imports;
* ``multiframe`` — the same pixels as one enhanced multi-frame instance, to
  compare one frame per request with ``frames/1,2,…`` batches.

Prints one JSON document on stdout; progress on stderr.
Run: ``.venv/bin/python benchmarks/load_series.py [--size small] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform as pyplatform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from neuronova_lib.db.users import demo_password
from neuronova_lib.demo import SIZES, write_demo_cases
from neuronova_lib.dicomweb.client import Client, connect
from neuronova_lib.dicomweb.frames import PixelFormat, decode_frame
from neuronova_lib.orthanc_store import OrthancStore
from neuronova_lib.stack.local import local_platform
from neuronova_lib.volume import load_dicom_files

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Median and best of ``repeats`` runs, after one warm-up; the last result for checking."""
    result = fn()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - started)
    return {"median_s": statistics.median(seconds), "best_s": min(seconds),
            "runs_s": [round(s, 4) for s in seconds], "result": result}


def summary(run: dict[str, Any], frames: int, local_s: float | None = None) -> dict[str, Any]:
    out = {
        "seconds": round(run["median_s"], 4),
        "best_seconds": round(run["best_s"], 4),
        "frames_per_s": round(frames / run["median_s"], 1),
        "runs_s": run["runs_s"],
    }
    if local_s:
        out["ratio_to_local"] = round(run["median_s"] / local_s, 3)
    return out


def store_files(store: OrthancStore, paths: list[Path]) -> None:
    for path in paths:
        store.store_file(path)


def restamped(paths: list[Path], transform: Callable[[Dataset], Dataset] | None = None
              ) -> list[Dataset]:
    """The series under a new study/series, new SOP UIDs (optionally transformed)."""
    study, series = generate_uid(), generate_uid()
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out.append(transform(ds) if transform else ds)
    return out


def write_and_store(store: OrthancStore, datasets: list[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, ds in enumerate(datasets):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        path = folder / f"{index + 1:04d}.dcm"
        path.write_bytes(buffer.getvalue())
        store.store(buffer.getvalue())
        paths.append(path)
    return paths


def multiframe(paths: list[Path]) -> Dataset:
    """The slices as one enhanced-MR-like multi-frame instance (per-frame plane positions)."""
    slices = [pydicom.dcmread(p) for p in paths]
    first = slices[0]
    ds = copy.deepcopy(first)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "SliceLocation", "PixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ENHANCED_MR
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(slices)
    orientation, measures, shared = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    measures.PixelSpacing = first.PixelSpacing
    measures.SliceThickness = first.SliceThickness
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    groups = []
    for item in slices:
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = item.ImagePositionPatient
        group.PlanePositionSequence = [position]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    ds.add_new(0x7FE00010, "OW", b"".join(item.PixelData for item in slices))
    return ds


def read_and_decode_only(paths: list[Path]) -> np.ndarray:
    """The floor: pydicom reads each file, the frame is decoded; no metadata, no geometry."""
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    fmt = PixelFormat(rows=first.Rows, columns=first.Columns, bits_allocated=first.BitsAllocated,
                      bits_stored=first.BitsStored, pixel_representation=first.PixelRepresentation)
    stack = np.empty((len(paths), fmt.rows, fmt.columns), dtype=fmt.dtype)
    for k, path in enumerate(paths):  # file order is slice order in the demo data
        ds = pydicom.dcmread(path)
        stack[k] = decode_frame(ds.PixelData, ds.file_meta.TransferSyntaxUID, fmt)
    return stack.transpose(2, 1, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="brats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument("--no-htj2k", action="store_true")
    parser.add_argument("--no-multiframe", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    shape, spacing = SIZES[args.size]

    with tempfile.TemporaryDirectory(prefix="neuronova-bench-") as tmp:
        root = Path(tmp)
        log(f"writing one {args.size} demo case {shape} …")
        started = time.perf_counter()
        [case] = write_demo_cases(root / "data", cases=1, seed=0, shape=shape, spacing=spacing)
        log(f"  {time.perf_counter() - started:.1f} s")
        files = sorted(case.dicom_dirs["t1"].glob("*.dcm"))
        truth = np.asanyarray(__import__("nibabel").load(case.nifti["t1"]).dataobj)
        report: dict[str, Any] = {
            "what": "load one series: remote (nginx + guard + Orthanc, concurrent frame requests, "
                    "decode in the client) vs local files (pydicom read + same decoders)",
            "machine": {"cpus": os.cpu_count(), "python": pyplatform.python_version(),
                        "platform": pyplatform.platform()},
            "series": {"shape": list(shape), "frames": len(files),
                       "bytes_per_frame": int(np.prod(shape[:2]) * 2),
                       "transfer_syntax": "1.2.840.10008.1.2.1"},
            "repeats": args.repeats,
        }

        log("local: pydicom read + decode …")
        local = timed(lambda: load_dicom_files(files), args.repeats)
        assert np.array_equal(local["result"].array, truth)
        local_s = local["median_s"]
        report["local"] = summary(local, len(files))
        floor = timed(lambda: read_and_decode_only(files), args.repeats)
        assert np.array_equal(floor["result"], truth)
        report["local_read_decode_only"] = summary(floor, len(files))

        log("starting the platform …")
        with local_platform(root / "home") as platform:
            store = OrthancStore.from_settings(platform.settings)
            store_files(store, files)
            password = demo_password(platform.settings, "clinician")
            report["orthanc_wado_plugin"] = bool(getattr(platform.settings, "orthanc_wado_plugin", False))

            def client(workers: int) -> Client:
                return connect(platform.url, username="clinician", password=password,
                               max_workers=workers)

            remote: dict[str, Any] = {}
            for workers in levels:
                log(f"remote: max_workers={workers} …")
                with client(workers) as c:
                    run = timed(lambda c=c: c.load_series(case.study_instance_uid,
                                                          case.series_instance_uids["t1"],
                                                          progress=False), args.repeats)
                    assert np.array_equal(run["result"].array, truth)
                    remote[str(workers)] = summary(run, len(files), local_s)
                    meta = timed(lambda c=c: c.series_metadata(case.study_instance_uid,
                                                               case.series_instance_uids["t1"]),
                                 args.repeats)
                    remote[str(workers)]["metadata_request_s"] = round(meta["median_s"], 4)
            report["remote"] = remote
            def series_transport() -> dict[str, Any]:
                runs: dict[str, Any] = {}
                for workers in (1, 4):
                    log(f"remote, transport=series: max_workers={workers} …")
                    try:
                        with client(workers) as c:
                            run = timed(lambda c=c: c.load_series(
                                case.study_instance_uid, case.series_instance_uids["t1"],
                                progress=False, transport="series"), args.repeats)
                            assert np.array_equal(run["result"].array, truth)
                            runs[str(workers)] = summary(run, len(files), local_s)
                    except Exception as exc:  # noqa: BLE001 - recorded with the other figures
                        runs[str(workers)] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                return runs

            report["remote_transport_series"] = series_runs = series_transport()
            if any("error" in r for r in series_runs.values()):
                # nginx spools answers over ~2 MB to run/nginx-tmp; its workers run as `nobody`
                # when started as root and cannot enter the 0700 home, so such answers are cut
                # short. Measure what the platform gives once that is fixed (o+x on the folders).
                for folder in (root, platform.settings.home, platform.settings.run_dir):
                    folder.chmod(folder.stat().st_mode | 0o001)
                report["nginx_temp_workaround"] = (
                    "applied after remote_transport_series failed: o+x on the temporary folder, "
                    "home and run/ so "
                    "nginx workers can spool large answers; remote_transport_series_fixed, "
                    "htj2k and multiframe were measured with it")
                report["remote_transport_series_fixed"] = series_runs = series_transport()
            candidates = {f"frames, max_workers={k}": v for k, v in remote.items()}
            candidates.update({f"series, max_workers={k}": v for k, v in series_runs.items()
                               if "error" not in v})
            best = min(candidates, key=lambda k: candidates[k]["seconds"])
            report["best"] = {"how": best, "seconds": candidates[best]["seconds"],
                              "ratio_to_local": candidates[best]["ratio_to_local"],
                              "ratio_to_read_decode_only": round(
                                  candidates[best]["seconds"] / floor["median_s"], 3),
                              "goal": "ratio_to_local <= 1.5",
                              "met": candidates[best]["ratio_to_local"] <= 1.5}
            best_frames = min(remote, key=lambda k: remote[k]["seconds"])
            report["best_frames"] = {
                "max_workers": int(best_frames), "seconds": remote[best_frames]["seconds"],
                "ratio_to_local": remote[best_frames]["ratio_to_local"],
                "ratio_to_read_decode_only": round(
                    remote[best_frames]["seconds"] / floor["median_s"], 3),
            }

            if not args.no_htj2k:
                try:
                    from neuronova_lib.transcode import transcode_to_htj2k

                    log("htj2k: transcoding and storing …")
                    datasets = restamped(files, transcode_to_htj2k)
                    ht_files = write_and_store(store, datasets, root / "htj2k")
                    study, series = datasets[0].StudyInstanceUID, datasets[0].SeriesInstanceUID
                    ht_local = timed(lambda: load_dicom_files(ht_files), args.repeats)
                    assert np.array_equal(ht_local["result"].array, truth)
                    ht: dict[str, Any] = {
                        "bytes_per_frame_mean": round(float(np.mean(
                            [len(ds.PixelData) for ds in datasets])), 1),
                        "local": summary(ht_local, len(files)),
                        "remote": {},
                    }
                    for workers in levels:
                        log(f"htj2k remote: max_workers={workers} …")
                        with client(workers) as c:
                            run = timed(lambda c=c: c.load_series(study, series, progress=False),
                                        args.repeats)
                            assert np.array_equal(run["result"].array, truth)
                            assert run["result"].metadata["TransferSyntaxUIDs"] == [
                                "1.2.840.10008.1.2.4.201"]
                            ht["remote"][str(workers)] = summary(run, len(files), ht_local["median_s"])
                    for workers in (1, 4):
                        log(f"htj2k remote, transport=series: max_workers={workers} …")
                        try:
                            with client(workers) as c:
                                run = timed(lambda c=c: c.load_series(
                                    study, series, progress=False, transport="series"), args.repeats)
                                assert np.array_equal(run["result"].array, truth)
                                ht["remote"][f"series_{workers}"] = summary(
                                    run, len(files), ht_local["median_s"])
                        except Exception as exc:  # noqa: BLE001 - recorded
                            ht["remote"][f"series_{workers}"] = {
                                "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
                    report["htj2k"] = ht
                except Exception as exc:  # noqa: BLE001 - reported, the other figures kept
                    report["htj2k"] = {"error": f"{type(exc).__name__}: {exc}"}

            if not args.no_multiframe:
                log("multi-frame: one instance of all frames …")
                ds = multiframe(files)
                buffer = io.BytesIO()
                ds.save_as(buffer, enforce_file_format=True)
                store.store(buffer.getvalue())
                mf: dict[str, Any] = {"max_workers": 8, "bytes": len(buffer.getvalue())}
                for batch in (1, 4, 8, 16, 64, len(files), None):
                    label = f"frames_per_request_{batch or 'auto'}"
                    log(f"multi-frame remote: {label} …")
                    try:
                        with client(8) as c:
                            run = timed(lambda c=c, b=batch: c.load_series(
                                ds.StudyInstanceUID, ds.SeriesInstanceUID, progress=False,
                                frames_per_request=b), args.repeats)
                            assert np.array_equal(run["result"].array, truth)
                            mf[label] = summary(run, len(files), local_s)
                    except Exception as exc:  # noqa: BLE001 - recorded with the others
                        mf[label] = {
                            "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                report["multiframe"] = mf

    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
