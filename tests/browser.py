"""A real headless browser for tests: Debian's Chromium driven by Selenium.

Debian's ``chromium`` and ``chromium-driver`` (scripts/install-system-deps.sh);
Selenium is pointed at ``/usr/bin/chromedriver`` so that Selenium Manager never
downloads a browser or a driver. Each browser gets a fresh profile folder and
the flags that keep Chromium off the network (no component updates, sync or
background requests).

Use the fixture in a test module (JupyterHub and dashboard tests do the same)::

    from browser import browser, sign_in  # noqa: F401 (fixture)

    def test_x(browser, platform):
        sign_in(browser, platform.url, "owner", platform.password("owner"))
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds a test waits for a page or an element.
WAIT = 60.0


def _flags(profile: Path) -> list[str]:
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
            "--disable-dev-shm-usage", "--window-size=1400,900",
            f"--user-data-dir={profile}"]


def new_browser(profile: Path, network_log: bool = False) -> Any:
    """A headless Chromium with its own profile in ``profile`` (quit it when done).

    ``network_log``: keep Chrome's performance log (every request and answer as
    DevTools ``Network.*`` events, read with :func:`network_events`).
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: run `make test` (the `test` extra installs it)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            pytest.fail(f"{path} is missing: run `make test` (it installs Debian {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in _flags(profile):
        options.add_argument(flag)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(WAIT)
    return driver


@pytest.fixture
def browser() -> Iterator[Any]:
    """A fresh headless Chromium (new profile: no cookies) for one test."""
    profile = Path(tempfile.mkdtemp(prefix="neuronova-chromium-"))
    driver = new_browser(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A fresh headless Chromium at 1920×1080 that logs every request (Chrome's performance
    log), for the pages whose tests check that nothing is fetched from another host."""
    profile = Path(tempfile.mkdtemp(prefix="neuronova-chromium-"))
    driver = new_browser(profile, network_log=True)
    driver.set_window_size(1920, 1080)
    try:
        yield driver
    finally:
        # The page unloads, as when a tab is closed: a dashboard page ends its kernel then
        # (quitting alone would leave it loading the study, taking the next test's CPU).
        try:
            driver.get("about:blank")
            time.sleep(0.5)  # the kernel's shutdown request goes out
        except Exception:  # noqa: BLE001 - a browser that is gone has nothing to unload
            pass
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshots(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: ``NEURONOVA_SCREENSHOTS`` (CI keeps them as
    artifacts) or the test's own temporary folder."""
    folder = Path(os.environ.get("NEURONOVA_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def other_hosts(events: list[dict[str, Any]], origin: str) -> list[str]:
    """The URLs requested from anywhere but ``origin`` (data: and blob: are in the page)."""
    found = []
    for event in events:
        if event["method"] != "Network.requestWillBeSent":
            continue
        url = event["params"]["request"]["url"]
        if url.split(":", 1)[0] in ("data", "blob"):
            continue
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" != origin:
            found.append(url)
    return found


def network_events(driver: Any) -> list[dict[str, Any]]:
    """The DevTools ``Network.*`` events logged since the last call (``network_log=True``)."""
    import json

    events = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method", "").startswith("Network."):
            events.append(message)
    return events


def wait_for(driver: Any, css: str, timeout: float = WAIT) -> Any:
    """The first element matching ``css`` once it is visible."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css)))


def wait_for_text(driver: Any, text: str, timeout: float = WAIT) -> None:
    """Wait until ``text`` appears in the page's visible text.

    The page may still be navigating (a form just submitted): a body that goes stale while
    it is read is read again on the next poll, not an error.
    """
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import TimeoutException

    try:
        WebDriverWait(driver, timeout, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(
            lambda d: text in d.find_element(By.TAG_NAME, "body").text)
    except TimeoutException:
        shot = Path(tempfile.mkdtemp(prefix="neuronova-wait-")) / "page.png"
        driver.save_screenshot(str(shot))
        body = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s at "
                             f"{driver.current_url} (screenshot {shot}); the page says:\n"
                             f"{body[:2000]}") from None


def sign_in(driver: Any, base_url: str, username: str, password: str,
            next_path: str = "/") -> None:
    """Fill in the platform's sign-in form as a person would, and submit it."""
    from urllib.parse import quote

    driver.get(f"{base_url}/login?next={quote(next_path)}")
    wait_for(driver, "#username").send_keys(username)
    driver.find_element("css selector", "#password").send_keys(password)
    driver.find_element("css selector", "button[type=submit]").click()


def session_cookie(driver: Any) -> str | None:
    """The value of ``neuronova_session`` in the browser, if any."""
    cookie = driver.get_cookie("neuronova_session")
    return cookie["value"] if cookie else None


#: When the study page's first image was painted (Element Timing: the image carries
#: ``elementtiming``) and when Voilà's script had arrived (Resource Timing), in ms from the
#: navigation's start; null for what the page did not have.
FIRST_IMAGE_PAINTED = """
const done = arguments[0];
const script = performance.getEntriesByType('resource')
  .find(r => r.name.endsWith('/voila/static/voila.js'));
const scripts = script ? script.responseEnd : null;
const timer = setTimeout(() => done([null, scripts]), 2000);
new PerformanceObserver((list, observer) => {
  const entry = list.getEntries().find(e => e.identifier === 'nn-first-image');
  if (entry) {
    clearTimeout(timer);
    observer.disconnect();
    done([entry.renderTime || entry.loadTime, scripts]);
  }
}).observe({type: 'element', buffered: true});
"""


def first_image_painted(driver: Any) -> tuple[float | None, float | None]:
    """``(painted, scripts)``: :data:`FIRST_IMAGE_PAINTED` for the page ``driver`` shows."""
    driver.set_script_timeout(10)
    painted, scripts = driver.execute_async_script(FIRST_IMAGE_PAINTED)
    return painted, scripts

