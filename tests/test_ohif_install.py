"""OHIF's prebuilt dist re-based for /pacs-viewer/, its config and its nginx route (no process).

Runs on the real npm package (``make viewer`` installs it: ``npm ci --prefix ohif``).
The viewer itself, in a browser on the real stack: tests/test_ohif_e2e.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neuronova_lib.config import Settings
from neuronova_lib.stack import ohif
from neuronova_lib.stack.render import OHIF_CSP, ohif_viewer, render_nginx


@pytest.fixture(scope="module")
def dist() -> Path:
    if not (ohif.DIST / "index.html").is_file():
        pytest.fail(f"OHIF's npm package is not installed in {ohif.DIST}: run `make viewer`")
    return ohif.DIST


def test_the_copy_is_rebased_for_its_path(dist: Path, tmp_path: Path) -> None:
    target = ohif.install_viewer(dist, tmp_path, "/x/pacs-viewer/")
    assert target == tmp_path / "pacs-viewer"
    index = (target / "index.html").read_text()
    assert 'window.PUBLIC_URL="/x/pacs-viewer/"' in index and 'PUBLIC_URL="/"' not in index
    paths = re.findall(r'(?:src|href)="([^"]+)"', index)
    assert paths and all(p.startswith("/x/pacs-viewer/") for p in paths), paths
    loaders = 0
    for script in target.glob("*.js"):
        text = script.read_text(encoding="utf-8")
        assert '__webpack_require__.p = "/";' not in text, script.name
        loaders += '__webpack_require__.p = "/x/pacs-viewer/";' in text
    assert loaders >= 1  # the app bundle and the workers load their chunks from there
    for sheet in target.glob("*.css"):
        assert not re.search(r"url\(/(?!x/pacs-viewer/)", sheet.read_text()), sheet.name
    icons = json.loads((target / "manifest.json").read_text())["icons"]
    assert all(i["src"].startswith("/x/pacs-viewer/") for i in icons)
    # Someone else's deployment files are left out; the package itself is untouched.
    for name in ohif.LEFT_OUT:
        assert not (target / name).exists(), name
    assert 'window.PUBLIC_URL="/"' in (dist / "index.html").read_text()
    assert "cloudfront" in (dist / "app-config.js").read_text()


def test_installing_again_does_nothing_and_a_new_path_redoes_it(dist: Path,
                                                                 tmp_path: Path) -> None:
    target = ohif.install_viewer(dist, tmp_path)
    index = target / "index.html"
    inode = index.stat().st_ino
    assert ohif.install_viewer(dist, tmp_path) == target
    assert index.stat().st_ino == inode  # not rewritten
    stamp = ohif.installed_stamp(tmp_path)
    assert stamp is not None and stamp["base"] == "/pacs-viewer/"
    assert stamp["version"] == json.loads((dist.parent / "package.json").read_text())["version"]
    ohif.install_viewer(dist, tmp_path, "/other/pacs-viewer/")
    assert 'PUBLIC_URL="/other/pacs-viewer/"' in index.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["pacs-viewer"]  # no work folder left


def test_a_missing_package_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(ohif.ViewerNotInstalled, match="make viewer"):
        ohif.install_viewer(tmp_path / "dist", tmp_path / "out")
    with pytest.raises(ValueError, match="start and end with '/'"):
        ohif.install_viewer(tmp_path, tmp_path, "pacs-viewer")


def _config(text: str) -> dict:
    body = text[text.index("window.config = ") + len("window.config = "):].rstrip().rstrip(";")
    return dict(json.loads(body))


@pytest.mark.parametrize(("public", "dicomweb", "base"), [
    (None, "/api/pacs/dicom-web", "/pacs-viewer"),
    ("https://pacs.example.org/neuronova/", "/neuronova/api/pacs/dicom-web",
     "/neuronova/pacs-viewer"),
])
def test_app_config_reads_the_guard_only(public: str | None, dicomweb: str, base: str) -> None:
    settings = Settings(**({"public_url": public} if public else {}))
    text = ohif.render_app_config(settings)
    config = _config(text)
    assert config["routerBasename"] == base
    [source] = config["dataSources"]
    assert config["defaultDataSourceName"] == source["sourceName"]
    roots = {source["configuration"][k] for k in ("qidoRoot", "wadoRoot", "wadoUriRoot")}
    assert roots == {dicomweb}
    assert "://" not in text  # nothing on another host; same origin, no CORS preflight
    toolbox = config["customizationService"]["cornerstone.segmentationToolbarSections"]["$set"]
    tools = {t for names in toolbox.values() for t in names}
    assert not tools & {"MarkerLabelmap", "LabelmapSlicePropagation", "InterpolateLabelmap"}
    assert config["customizationService"]["ohif.tours"] == {"$set": []}
    assert ohif.study_link(settings, "1.2.3") == base.removesuffix("/pacs-viewer") \
        + "/api/studies/1.2.3/ohif"


def test_nginx_serves_it_behind_sign_in_without_coep(dist: Path, tmp_path: Path) -> None:
    root = tmp_path / "build"
    ohif.install_viewer(dist, root)
    settings = Settings(home=tmp_path / "home")
    served, config, missing = ohif_viewer(settings, root)
    assert served == str(root) and not missing
    assert config and "/api/pacs/dicom-web" in Path(config).read_text()
    text = render_nginx(settings).read_text()
    start = text.index("location /pacs-viewer/ {")
    route = text[start:text.index("\n        }\n", start)]
    assert "auth_request /_auth/clinician,scientist,model_owner,admin;" in route
    assert f'Content-Security-Policy "{OHIF_CSP}"' in route
    assert "Cross-Origin-Embedder-Policy" not in route
    assert "connect-src 'self' blob: data:;" in OHIF_CSP
    # Not installed, or re-based for another path: the route says what to run.
    assert ohif_viewer(settings, tmp_path / "none")[2].startswith("The OHIF viewer is not "
                                                                 "installed: run `make viewer`")
    prefixed = Settings(home=tmp_path / "home2", public_url="https://pacs.example.org/nn")
    assert "--base /nn/pacs-viewer/" in ohif_viewer(prefixed, root)[2]
