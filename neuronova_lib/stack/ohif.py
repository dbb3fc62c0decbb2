"""OHIF's prebuilt viewer at ``/pacs-viewer/``: re-base npm's ``@ohif/app`` ``dist/`` once.

The dist that ``@ohif/app`` ships is built for the site root (FINDINGS, "OHIF"):
``window.PUBLIC_URL="/"`` and absolute ``/…`` asset paths in ``index.html``, the
webpack public path ``"/"`` in the bundles that load chunks, ``url(/…)`` fonts in
the CSS, ``/assets/…`` icons in ``manifest.json``. Rather than build OHIF from
source, :func:`install_viewer` copies the dist (hard links where it can: it is
200 MB) and rewrites those strings for the viewer's path. It is idempotent: a
stamp records the package version, the path and the rules, and a finished copy
is only replaced by a complete new one.

Files for other deployments are left out: the shipped ``app-config.js`` (it
points at OHIF's public demo server; nginx serves the platform's own, rendered
per data dir by :func:`render_app_config`), Netlify's ``_headers``/``_redirects``,
``serve.json`` and the Google Healthcare config ``google.js``.

Run ``python -m neuronova_lib.stack.ohif`` (``make viewer`` does, after ``npm ci
--prefix ohif``); ``--base /prefix/pacs-viewer/`` for a platform under a path prefix.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..config import REPO_ROOT, Settings

#: Where users reach the viewer (nginx's location) when the platform is at the root.
VIEWER_PATH = "/pacs-viewer/"
PACKAGE_DIR = REPO_ROOT / "ohif"
DIST = PACKAGE_DIR / "node_modules" / "@ohif" / "app" / "dist"
#: nginx's ``root``: the re-based copy is ``INSTALL_ROOT/pacs-viewer/``.
INSTALL_ROOT = PACKAGE_DIR / "build"
STAMP = ".neuronova-viewer.json"
#: The shipped files that configure someone else's deployment.
LEFT_OUT = frozenset({"app-config.js", "google.js", "_headers", "_redirects", "serve.json"})
#: Bump when the rewrite rules change, so existing copies are redone.
RULES_VERSION = 1

_PUBLIC_URL = re.compile(r'window\.PUBLIC_URL="/"')
_HTML_ATTR = re.compile(r'((?:src|href|content)=")/(?!/)')
_PUBLIC_PATH = re.compile(r'(__webpack_require__\.p = )"/";')
_CSS_URL = re.compile(r"url\(/(?!/)")
_MANIFEST_SRC = re.compile(r'("(?:src|start_url)": ")/(?!/)')


class ViewerNotInstalled(RuntimeError):
    """The npm package is missing; the message says how to install it."""


def viewer_dir(root: Path = INSTALL_ROOT) -> Path:
    return root / VIEWER_PATH.strip("/")


def rebase_text(name: str, text: str, base: str) -> str:
    """``text`` of dist file ``name`` with its root-relative paths moved under ``base``."""
    if name == "index.html":
        text = _PUBLIC_URL.sub(f'window.PUBLIC_URL="{base}"', text)
        return _HTML_ATTR.sub(rf"\g<1>{base}", text)
    if name.endswith(".css"):
        return _CSS_URL.sub(f"url({base}", text)
    if name == "manifest.json":
        return _MANIFEST_SRC.sub(rf"\g<1>{base}", text)
    if name.endswith(".js"):
        return _PUBLIC_PATH.sub(rf'\g<1>"{base}";', text)
    return text


def _package_version(dist: Path) -> str:
    meta = json.loads((dist.parent / "package.json").read_text())
    return str(meta["version"])


def _wanted_stamp(dist: Path, base: str) -> dict[str, object]:
    rules = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return {"package": "@ohif/app", "version": _package_version(dist), "base": base,
            "rules": RULES_VERSION, "module": rules}


def installed_stamp(root: Path = INSTALL_ROOT) -> dict[str, object] | None:
    path = viewer_dir(root) / STAMP
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def install_viewer(dist: Path = DIST, root: Path = INSTALL_ROOT,
                   base: str = VIEWER_PATH) -> Path:
    """Re-base ``dist`` for ``base`` into ``root/pacs-viewer``; nothing to do if it is done.

    Returns the installed folder. Text files that change are written anew (never
    through a hard link into ``node_modules``); the rest are linked.
    """
    if not base.startswith("/") or not base.endswith("/"):
        raise ValueError(f"the viewer's base path must start and end with '/': {base!r}")
    if not (dist / "index.html").is_file():
        raise ViewerNotInstalled(
            f"OHIF's prebuilt viewer is not installed ({dist} has no index.html): run "
            "`make viewer` (npm ci --prefix ohif, then python -m neuronova_lib.stack.ohif)")
    wanted = _wanted_stamp(dist, base)
    target = viewer_dir(root)
    if installed_stamp(root) == wanted:
        return target
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".pacs-viewer-", dir=root))
    try:
        for source in sorted(dist.rglob("*")):
            relative = source.relative_to(dist)
            if relative.as_posix() in LEFT_OUT:
                continue
            out = work / relative
            if source.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if source.suffix in (".html", ".js", ".css", ".json") and len(relative.parts) == 1:
                text = source.read_text(encoding="utf-8")
                changed = rebase_text(source.name, text, base)
                if changed != text:
                    out.write_text(changed, encoding="utf-8")
                    continue
            _link_or_copy(source, out)
        (work / STAMP).write_text(json.dumps(wanted, indent=1) + "\n")
        old = root / f".old-{os.getpid()}"
        if target.exists():
            target.rename(old)
        work.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def viewer_base(settings: Settings) -> str:
    """The viewer's path as users see it: the public URL's path prefix + ``/pacs-viewer/``."""
    return urlsplit(settings.public_url).path.rstrip("/") + VIEWER_PATH


def study_link(settings: Settings, study_uid: str) -> str:
    """The link that opens ``study_uid`` in OHIF for a signed-in browser (the worklist's).

    A path under the public URL's prefix: the API's ``GET /api/studies/{uid}/ohif``
    mints the study's token for the user and redirects to the viewer.
    """
    return f"{urlsplit(settings.public_url).path.rstrip('/')}/api/studies/{study_uid}/ohif"


def render_app_config(settings: Settings) -> str:
    """The platform's ``app-config.js`` (nginx serves it at ``/pacs-viewer/app-config.js``).

    One DICOMweb data source, the guard's route (path only: same origin as the
    viewer, so no CORS preflight for OHIF's bearer header); OHIF's demo server and
    every other data source gone; the segmentation tools that download code or
    models from other hosts (the AI-assisted labelmap tools: ONNX models from
    huggingface.co; labelmap interpolation: itk-wasm from jsdelivr) taken out of
    the toolbox. nginx's Content-Security-Policy on the route blocks any such
    request anyway.
    """
    dicomweb = urlsplit(settings.public_dicomweb_url).path.rstrip("/")
    base = viewer_base(settings)
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "neuronova",
        "configuration": {
            "friendlyName": "NeuroNova PACS",
            "name": "neuronova",
            "wadoUriRoot": dicomweb,
            "qidoRoot": dicomweb,
            "wadoRoot": dicomweb,
            "qidoSupportsIncludeField": True,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    toolbox = {
        "labelMapSegmentationToolbox": ["LabelMapTools"],
        "contourSegmentationToolbox": ["ContourTools"],
        "labelMapSegmentationUtilities": ["LabelMapUtilities"],
        "contourSegmentationUtilities": ["ContourUtilities"],
        "LabelMapTools": ["BrushTools", "ClickSegment", "Shapes", "LabelMapEditWithContour"],
        "ContourTools": ["PlanarFreehandContourSegmentationTool", "SculptorTool",
                         "SplineContourSegmentationTool", "LivewireContourSegmentationTool"],
        "LabelMapUtilities": ["SegmentBidirectional"],
        "ContourUtilities": ["LogicalContourOperations", "SimplifyContours", "SmoothContours"],
        "BrushTools": ["Brush", "Eraser", "Threshold"],
    }
    config = {
        "name": "neuronova",
        "routerBasename": base.rstrip("/"),
        "extensions": [],
        "modes": [],
        "showStudyList": False,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "production",
        "defaultDataSourceName": "neuronova",
        "dataSources": [source],
        "customizationService": {
            "cornerstone.segmentationToolbarSections": {"$set": toolbox},
            # No guided tour over the first image (a clinician opens studies, not demos).
            "ohif.tours": {"$set": []},
        },
    }
    return ("// NeuroNova's OHIF configuration, rendered by neuronova_lib.stack.ohif for this\n"
            "// data dir; edit that module, not this file.\n"
            f"window.config = {json.dumps(config, indent=1)};\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neuronova_lib.stack.ohif",
                                     description="Re-base OHIF's prebuilt viewer for nginx.")
    parser.add_argument("--base", default=VIEWER_PATH,
                        help="the viewer's public path (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        path = install_viewer(base=args.base)
    except ViewerNotInstalled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"OHIF viewer ready in {path} for {args.base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
