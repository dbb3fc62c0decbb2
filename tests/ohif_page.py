"""OHIF in a test browser: the demo study it opens, its link, and "is an image drawn?".

Shared by tests/test_ohif_e2e.py and benchmarks/dashboard.py (which puts tests/ on
its path for this module and tests/browser.py).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom

from browser import WAIT, sign_in
from neuronova_lib.ai.results import ModelInfo, build_results, to_bytes
from neuronova_lib.demo import SIZES, write_demo_cases
from neuronova_lib.ingest import Gate
from neuronova_lib.ingest.store import Ingestor
from neuronova_lib.stack.ohif import study_link
from neuronova_lib.stack.platform import load_folder
from test_ai_results import brats_regions

#: Statistics of the pixels of OHIF's viewport canvases (drawn image, not UI chrome):
#: ``lit`` share of non-black pixels, ``colour`` share of coloured ones (a segmentation
#: overlay; the MR image itself is grey), grey ``levels``.
CANVAS_PIXELS = """
const out = [];
for (const c of document.querySelectorAll('canvas.cornerstone-canvas, .viewport-element canvas')) {
  if (!c.width || !c.height) { continue; }
  let data;
  try {
    const copy = document.createElement('canvas');
    copy.width = c.width; copy.height = c.height;
    const ctx = copy.getContext('2d');
    ctx.drawImage(c, 0, 0);
    data = ctx.getImageData(0, 0, c.width, c.height).data;
  } catch (e) { out.push({error: String(e)}); continue; }
  let lit = 0, sum = 0, sum2 = 0, colour = 0; const levels = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
    if (v > 8) { lit++; }
    const hi = Math.max(data[i], data[i + 1], data[i + 2]);
    if (hi - Math.min(data[i], data[i + 1], data[i + 2]) > 40) { colour++; }
    sum += v; sum2 += v * v; levels.add(data[i]);
  }
  const n = data.length / 4, mean = sum / n;
  out.push({width: c.width, height: c.height, lit: lit / n, colour: colour / n, mean: mean,
            std: Math.sqrt(Math.max(0, sum2 / n - mean * mean)), levels: levels.size});
}
return out;
"""


@dataclass(frozen=True)
class DemoStudy:
    study: str
    t1_series: str
    seg_series: str
    series_count: int
    #: One T1 instance (a frame to fetch as the benchmark's baseline).
    t1_instance: str


def store_demo_study(settings: Any, folder: Path, seed: int, size: str = "small") -> DemoStudy:
    """One synthetic case as HTJ2K, plus a SEG of its ground truth, through the ingest gate.

    ``size``: ``small`` (64×64×40) or ``brats`` (240×240×155, as ``neuronova up`` writes).
    """
    shape, spacing = SIZES[size]
    case = write_demo_cases(folder, cases=1, seed=seed, shape=shape, spacing=spacing)[0]
    loaded = load_folder(settings, case.directory / "dicom", htj2k=True)
    assert set(loaded["status"]) <= {"Success", "AlreadyStored"}, loaded
    sources = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in sorted(Path(case.dicom_dirs["t1"]).glob("*.dcm"))]
    masks = brats_regions(np.asarray(nib.load(case.labels).dataobj))
    results = build_results(sources, masks, model=ModelInfo("ground-truth", "0", None),
                            job_id=f"ohif-test-{seed}",
                            created=dt.datetime(2026, 12, 7, 6, 0, tzinfo=dt.UTC))
    with Gate(settings) as gate:
        outcome = Ingestor(settings, gate).ingest(to_bytes(results.seg), sender="tests",
                                                  route="demo")
    assert outcome.stored, (outcome.reason, outcome.message)
    return DemoStudy(case.study_instance_uid, case.series_instance_uids["t1"],
                     str(results.seg.SeriesInstanceUID), len(case.series_instance_uids) + 1,
                     str(sources[len(sources) // 2].SOPInstanceUID))


def open_in_ohif(driver: Any, platform: Any, study: str, username: str) -> None:
    """Sign in through the form with the worklist's link as ``next``, as a person would."""
    sign_in(driver, platform.url, username, platform.password(username),
            next_path=study_link(platform.settings, study))


def is_image(stats: dict[str, Any]) -> bool:
    """A canvas holding an image: some lit pixels, contrast, many grey levels (not a blank,
    not a flat fill, not a spinner)."""
    return ("error" not in stats and stats["lit"] > 0.01 and stats["std"] > 5
            and stats["levels"] > 16)


def _wait_for_canvas(driver: Any, shows: Callable[[dict[str, Any]], bool], what: str,
                     timeout: float, poll: float) -> dict[str, Any]:
    """The statistics of the first viewport canvas for which ``shows`` holds."""
    deadline = time.monotonic() + timeout
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = driver.execute_script(CANVAS_PIXELS)
        for stats in seen:
            if shows(stats):
                return dict(stats)
        time.sleep(poll)
    raise AssertionError(f"no {what} within {timeout} s: {seen}")


def wait_for_image(driver: Any, timeout: float = WAIT) -> dict[str, Any]:
    """The statistics of the first viewport canvas once it shows an image (not a blank)."""
    return _wait_for_canvas(driver, is_image, "image drawn on OHIF's canvas", timeout, 0.1)


def wait_for_overlay(driver: Any, timeout: float = WAIT) -> dict[str, Any]:
    """The first viewport canvas's statistics once coloured (segmentation) pixels show."""
    return _wait_for_canvas(driver, lambda stats: "error" not in stats and
                            stats["colour"] > 0.0005,
                            "segmentation drawn over the image", timeout, 0.2)
