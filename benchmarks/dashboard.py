#!/usr/bin/env python3
"""Clinician pages measured in a real browser: the OHIF viewer's first image.

The question: once a clinician follows the worklist's link to a study
(``/api/studies/{uid}/ohif``: the API mints the study's token and redirects to
``/pacs-viewer/viewer``), how long until OHIF has drawn the first image? Measured
in headless Debian Chromium (Selenium), from the navigation to the moment the
viewport's canvas holds an image (its pixels read back, not a blank), polled every
20 ms:

* ``first_image_cold_s`` — a fresh browser profile: OHIF's 200 MB of bundles and
  codecs come over the network first (a clinician's first visit);
* ``first_image_warm_s`` — the same browser again (bundles in its cache, as on
  every later visit; the study's metadata and frames are fetched anew);
* ``baseline_frame_fetch_s`` — the same browser, on a quiet page of the platform, fetches one
  frame of the same series with ``fetch()`` and the link's token: the data path
  alone (nginx, guard, Orthanc), no boot, no decode, no drawing. The ratios say how
  many frame fetches' time the viewer adds. ``series_metadata_fetch_s`` (a
  diagnostic): the T1 series' WADO-RS metadata, which OHIF reads for every series
  before it draws.

It starts the real platform (Orthanc, guard, API, nginx; no MLflow or Dask) on
free loopback ports in a temporary home, stores one synthetic case as HTJ2K
lossless with a SEG, and re-bases OHIF first if needed (``make viewer`` must have
run: ``npm ci --prefix ohif``).

The Voilà study viewer (``/dashboards/voila/render/study.ipynb?study=<uid>``), same study,
same browser kind. ``voila.first_image_cold_s`` (a new browser: Voilà's and NiiVue's
scripts come over the network) and ``first_image_warm_s`` (the same browser again): until
the page's first image is painted, the middle FLAIR slice that the page's HTML carries,
timed by the browser itself (Element Timing: the image has ``elementtiming``; ms from the
navigation's start). The page's kernel is one of Voilà's preheated pool, its imports done.
``viewer_drawn_*_s``: until NiiVue has drawn the study (a quarter-resolution volume first)
and the first image has given way to it, seen in screenshots of NiiVue's WebGL canvas
(its pixels cannot be read back from the page), polled as fast as Chromium takes them
(about 0.1 s), so coarse by that much. ``full_resolution_warm_s``: until the shown
sequence is drawn at full resolution (the page moves on to the next sequence).
``slice_step``: the mouse wheel over the image, one slice per event, timed in the page to
the second animation frame after each event (the frame that shows the new slice), against
the same two frames with no scroll (``baseline_two_frames_ms``); a screenshot before and
after proves the slice moved. ``ratio_warm_to_ohif_warm`` compares the first image with
OHIF's warm first image measured in the same run (OHIF's is polled from outside the page,
as NiiVue's is: coarse by about 0.1 s).

Prints one JSON document on stdout; progress on stderr.
Run: ``.venv/bin/python benchmarks/dashboard.py [--size brats] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the test browser and OHIF page helpers

from browser import first_image_painted, new_browser, session_cookie, sign_in  # noqa: E402
from neuronova_lib.db.users import demo_password  # noqa: E402
from neuronova_lib.security.tokens import token_service  # noqa: E402
from neuronova_lib.stack.local import local_platform  # noqa: E402
from neuronova_lib.stack.ohif import install_viewer, study_link  # noqa: E402
from ohif_page import CANVAS_PIXELS, DemoStudy, is_image, store_demo_study  # noqa: E402

USER = "clinician"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
TIMEOUT_S = 120.0
#: Voilà starts a page's next preheated kernel 5 s after a page takes one, and its imports
#: take a few seconds: a page opened sooner waits for a kernel start.
POOL_REFILL_S = 12.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _drawn(driver: Any) -> bool:
    return any(is_image(stats) for stats in driver.execute_script(CANVAS_PIXELS))


def _time_until_drawn(driver: Any, url: str, start_page: str, drawn: Callable[[Any], bool],
                      what: str, shot_name: str, extra: Callable[[], str] = str) -> float:
    """Seconds from following a link to ``url`` on ``start_page`` until ``drawn(driver)``;
    on a timeout, a screenshot and an error naming ``what`` (plus ``extra()``)."""
    driver.get(start_page)
    start = time.perf_counter()
    driver.execute_script("window.location.href = arguments[0];", url)
    while time.perf_counter() - start < TIMEOUT_S:
        try:
            if drawn(driver):
                return time.perf_counter() - start
        except Exception:  # the page is between documents (a redirect, a canvas replaced)
            pass
        time.sleep(0.02)
    shot = Path(tempfile.gettempdir()) / shot_name
    driver.save_screenshot(str(shot))
    raise RuntimeError(f"{what} drew no image within {TIMEOUT_S} s of opening {url} "
                       f"(now at {driver.current_url}; screenshot {shot}{extra()})")


def time_first_image(driver: Any, url: str, start_page: str) -> float:
    """Seconds from following a link to ``url`` on ``start_page`` to OHIF's first image.

    The link is followed from a page of the platform, as from the worklist: the
    session cookie is ``SameSite=Strict``, so a navigation from elsewhere (about:blank
    included) arrives without it and goes to the sign-in page.
    """
    return _time_until_drawn(
        driver, url, start_page, _drawn, "OHIF", "neuronova-bench-ohif-timeout.png",
        lambda: f"; canvas {driver.execute_script(CANVAS_PIXELS)}")


def time_fetch(driver: Any, url: str, token: str, accept: str, repeats: int) -> list[float]:
    """Seconds for the page to fetch ``url`` with the token (bytes read, not decoded)."""
    script = """
    const [url, token, accept, repeats, done] = arguments;
    (async () => {
      const out = [];
      for (let i = 0; i < repeats; i++) {
        const t0 = performance.now();
        const r = await fetch(url, {cache: 'no-store',
                                    headers: {Authorization: 'Bearer ' + token, Accept: accept}});
        const body = await r.arrayBuffer();
        if (r.status !== 200 || body.byteLength === 0) { done({error: r.status}); return; }
        out.push((performance.now() - t0) / 1000);
      }
      done(out);
    })();
    """
    result = driver.execute_async_script(script, url, token, accept, repeats)
    if isinstance(result, dict):
        raise RuntimeError(f"fetching {url} failed: HTTP {result['error']}")
    return [float(x) for x in result]


def _summary(runs: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(runs), 4), "min": round(min(runs), 4),
            "max": round(max(runs), 4), "runs": [round(r, 4) for r in runs]}


def measure_ohif(base_url: str, link: str, password: str, demo: DemoStudy, token: str,
                 repeats: int) -> dict[str, Any]:
    """OHIF's first image, cold and warm, and one frame fetch as the baseline."""
    link = base_url + link
    start = base_url + "/login"  # signed in: the page that offers to sign out
    cold: list[float] = []
    warm: list[float] = []
    frame: list[float] = []
    metadata: list[float] = []
    for attempt in range(repeats):
        profile = Path(tempfile.mkdtemp(prefix="neuronova-bench-chromium-"))
        driver = new_browser(profile)
        try:
            driver.set_window_size(1920, 1080)
            driver.set_script_timeout(TIMEOUT_S)
            sign_in(driver, base_url, USER, password, next_path="/login")
            deadline = time.monotonic() + TIMEOUT_S
            while session_cookie(driver) is None and time.monotonic() < deadline:
                time.sleep(0.05)  # the form's answer sets the cookie
            cold.append(time_first_image(driver, link, start))
            warm.append(time_first_image(driver, link, start))
            log(f"ohif {attempt + 1}/{repeats}: cold {cold[-1]:.2f} s, warm {warm[-1]:.2f} s")
            if attempt == repeats - 1:
                for _ in range(repeats - 1):
                    warm.append(time_first_image(driver, link, start))
                # On a quiet page of the platform (OHIF would still be prefetching; the
                # sign-in page's CSP allows no fetch).
                driver.get(base_url + "/healthz")
                series = (f"{base_url}/api/pacs/dicom-web/studies/{demo.study}/series/"
                          f"{demo.t1_series}")
                frame_url = f"{series}/instances/{demo.t1_instance}/frames/1"
                time_fetch(driver, frame_url, token, FRAME_ACCEPT, 3)  # warm the path
                frame = time_fetch(driver, frame_url, token, FRAME_ACCEPT, max(5, repeats))
                metadata = time_fetch(driver, f"{series}/metadata", token,
                                      "application/dicom+json", max(3, repeats))
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
    base = statistics.median(frame)
    return {
        "first_image_cold_s": _summary(cold),
        "first_image_warm_s": _summary(warm),
        "baseline_frame_fetch_s": _summary(frame),
        "ratio_cold_to_frame": round(statistics.median(cold) / base, 1),
        "ratio_warm_to_frame": round(statistics.median(warm) / base, 1),
        # Diagnostic: one series' WADO-RS metadata (OHIF asks it for every series first).
        "series_metadata_fetch_s": _summary(metadata),
        "goal_first_image_s": 1.0,
    }


STUDY_PAGE = "/dashboards/voila/render/study.ipynb?study="


def _niivue_drawn(driver: Any) -> bool:
    """NiiVue's canvas holds an image: lit pixels with contrast (a screenshot of it), and
    the page's first image no longer covers it."""
    import io

    import numpy as np
    from PIL import Image

    if driver.execute_script("return !!document.querySelector('.nn-first-frame')"):
        return False
    canvases = driver.find_elements("css selector", "canvas")
    if not canvases:
        return False
    grey = np.asarray(Image.open(io.BytesIO(canvases[0].screenshot_as_png)).convert("L"))
    return bool(grey.size and (grey > 8).mean() > 0.05 and grey.std() > 5)


def _full_resolution(driver: Any) -> bool:
    """The shown sequence is at full resolution: the page has moved on to loading the
    next sequence (or finished)."""
    text = driver.find_element("tag name", "body").text
    return ("Loading the images" not in text and "(1 of " not in text
            and _niivue_drawn(driver))


def time_voila_image(driver: Any, url: str, start_page: str) -> tuple[float, float, float]:
    """Seconds from following a link to the study viewer to its first image (painted in
    the page's HTML, timed by the browser), to NiiVue's first image (the viewer drawn,
    the first image gone), and to the shown sequence at full resolution."""
    viewer = _time_until_drawn(driver, url, start_page, _niivue_drawn, "the study viewer",
                               "neuronova-bench-voila-timeout.png")
    painted, _ = first_image_painted(driver)
    first = viewer if painted is None else min(viewer, float(painted) / 1000.0)
    start = time.perf_counter()
    while not _full_resolution(driver):
        if time.perf_counter() - start > TIMEOUT_S:
            raise RuntimeError(f"the study viewer did not reach full resolution in {TIMEOUT_S} s")
        time.sleep(0.02)
    return first, viewer, viewer + time.perf_counter() - start


#: Scroll NiiVue one slice per wheel event and time each step to the second animation
#: frame after it (the frame that shows it); with ``arguments[0] == 0`` events, the same
#: two frames with no scroll: the baseline.
SLICE_STEPS = """
const [steps, scroll, done] = arguments;
const canvas = document.querySelector('canvas');
const box = canvas.getBoundingClientRect();
const times = [];
function step() {
  const t0 = performance.now();
  if (scroll) {
    canvas.dispatchEvent(new WheelEvent('wheel', {deltaY: 100, bubbles: true, cancelable: true,
      clientX: box.left + box.width / 2, clientY: box.top + box.height / 2}));
  }
  requestAnimationFrame(() => requestAnimationFrame(() => {
    times.push(performance.now() - t0);
    if (times.length < steps) step(); else done(times);
  }));
}
step();
"""


def time_slice_steps(driver: Any, steps: int = 20) -> dict[str, Any]:
    """Milliseconds per slice step while scrolling (after full resolution), against two
    animation frames with no scroll; a screenshot before and after proves the slice moved."""
    driver.set_script_timeout(60)
    before = driver.find_element("css selector", "canvas").screenshot_as_png
    scrolled = driver.execute_async_script(SLICE_STEPS, steps, True)
    after = driver.find_element("css selector", "canvas").screenshot_as_png
    if after == before:
        raise RuntimeError("scrolling did not change the study viewer's image")
    idle = driver.execute_async_script(SLICE_STEPS, steps, False)
    step_ms, frames_ms = statistics.median(scrolled), statistics.median(idle)
    return {"slice_step_ms": round(step_ms, 1), "p90_ms": round(sorted(scrolled)[int(0.9 * steps)], 1),
            "baseline_two_frames_ms": round(frames_ms, 1),
            "ratio_to_baseline": round(step_ms / frames_ms, 2), "steps": steps}


def measure_voila(base_url: str, study: str, password: str, repeats: int) -> dict[str, Any]:
    """The Voilà study viewer's first image and full resolution, cold and warm, and the
    time per slice step while scrolling."""
    link = base_url + STUDY_PAGE + study
    start = base_url + "/login"
    cold: list[float] = []
    warm: list[float] = []
    viewer_cold: list[float] = []
    viewer_warm: list[float] = []
    full: list[float] = []
    slices: list[dict[str, Any]] = []
    for attempt in range(repeats):
        profile = Path(tempfile.mkdtemp(prefix="neuronova-bench-chromium-"))
        driver = new_browser(profile)
        try:
            driver.set_window_size(1920, 1080)
            sign_in(driver, base_url, USER, password, next_path="/login")
            deadline = time.monotonic() + TIMEOUT_S
            while session_cookie(driver) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            first, viewer, _ = time_voila_image(driver, link, start)
            cold.append(first)
            viewer_cold.append(viewer)
            time.sleep(POOL_REFILL_S)  # the next page gets a preheated kernel, as a user's would
            first, viewer, whole = time_voila_image(driver, link, start)
            warm.append(first)
            viewer_warm.append(viewer)
            full.append(whole)
            slices.append(time_slice_steps(driver))
            log(f"voila {attempt + 1}/{repeats}: first image cold {cold[-1]:.2f} s, warm "
                f"{warm[-1]:.2f} s; viewer drawn cold {viewer_cold[-1]:.2f} s, warm "
                f"{viewer:.2f} s; full resolution {whole:.2f} s, "
                f"slice step {slices[-1]['slice_step_ms']} ms")
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
        time.sleep(POOL_REFILL_S)
    return {"first_image_cold_s": _summary(cold), "first_image_warm_s": _summary(warm),
            "viewer_drawn_cold_s": _summary(viewer_cold),
            "viewer_drawn_warm_s": _summary(viewer_warm),
            "full_resolution_warm_s": _summary(full),
            "slice_step": {"slice_step_ms": _summary([r["slice_step_ms"] for r in slices]),
                           "baseline_two_frames_ms": _summary(
                               [r["baseline_two_frames_ms"] for r in slices]),
                           "ratio_to_baseline": _summary([r["ratio_to_baseline"] for r in slices])},
            "goal_first_image_s": 1.0, "goal_slice_step_ms": 100.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "brats"), default="brats",
                        help="demo case size (brats: 240×240×155 as `neuronova up` writes)")
    parser.add_argument("--repeats", type=int, default=3, help="browsers (cold) and warm opens")
    args = parser.parse_args(argv)
    viewer = install_viewer()
    log(f"OHIF viewer in {viewer}")
    home = Path(tempfile.mkdtemp(prefix="neuronova-bench-dashboard-"))
    try:
        with local_platform(home / "home", mlflow_enabled=False, dask_enabled=False,
                            dashboards_enabled=True) as local:
            log(f"platform at {local.url}; storing one {args.size} case as HTJ2K")
            demo = store_demo_study(local.settings, home / "case", seed=7, size=args.size)
            token, _ = token_service(local.settings).mint(USER, USER, "signed", 900,
                                                          studies=[demo.study])
            password = demo_password(local.settings, USER)
            ohif = measure_ohif(local.url, study_link(local.settings, demo.study), password,
                                demo, token, args.repeats)
            voila = measure_voila(local.url, demo.study, password, args.repeats)
            voila["ratio_warm_to_ohif_warm"] = round(
                voila["first_image_warm_s"]["median"] / ohif["first_image_warm_s"]["median"], 1)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps({
        "benchmark": "dashboard",
        "size": args.size,
        "cpus": os.cpu_count(),
        "browser": "Debian chromium, headless, 1920×1080",
        "ohif": ohif,
        "voila": voila,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
