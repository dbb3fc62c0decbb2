"""The public DICOMweb root: one source for signed URLs, STOW-RS and Orthanc's own URLs.

Orthanc's DICOMweb plugin builds the URLs it writes into answers from the
``Forwarded`` header nginx sends it (see ``render.orthanc_forwarded``); these
check the header's value and the settings that feed it. Against the real
plugin: tests/test_public_urls_e2e.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from neuronova_lib.config import Settings
from neuronova_lib.stack.render import ORTHANC_DICOMWEB_ROOT, orthanc_forwarded, render_nginx
from services.proxy.paths import PREFIX


@pytest.mark.parametrize(("public", "forwarded"), [
    (None, "host=127.0.0.1:9000/api/pacs;proto=http"),
    ("https://pacs.example.org/neuronova/", "host=pacs.example.org/neuronova/api/pacs;proto=https"),
    ("https://pacs.example.org:8443", "host=pacs.example.org:8443/api/pacs;proto=https"),
    ("http://[::1]:8080/a/b", "host=[::1]:8080/a/b/api/pacs;proto=http"),
    ("https://pacs.example.org/x%20y/~me", "host=pacs.example.org/x%20y/~me/api/pacs;proto=https"),
])
def test_orthanc_is_told_the_public_dicomweb_root(public: str | None, forwarded: str) -> None:
    settings = Settings(port=9000, **({"public_url": public} if public else {}))
    assert orthanc_forwarded(settings) == forwarded
    # What the plugin builds from it, "proto://" + host + Root, is the public root.
    host = forwarded.split(";")[0].removeprefix("host=")
    proto = forwarded.split("proto=")[1]
    built = f"{proto}://{host}{ORTHANC_DICOMWEB_ROOT}".rstrip("/")
    assert built == settings.public_dicomweb_url
    assert settings.public_dicomweb_url.endswith(PREFIX)  # the guard's route


@pytest.mark.parametrize("bad", [
    "https://pacs.example.org/a;proto=http",  # would set Orthanc's scheme
    "https://pacs.example.org/a,host=evil",   # a second forwarder
    "https://pacs.example.org/a=b",
    'https://pacs.example.org/a"b',
    "https://pacs.example.org/a b",
    "https://pacs.example.org/$host",          # an nginx variable
    "https://user:secret@pacs.example.org/",   # credentials in every answer
    "https://pacs.example.org:99999/",
])
def test_public_url_refuses_what_the_header_cannot_carry(bad: str) -> None:
    with pytest.raises(ValidationError, match="NEURONOVA_PUBLIC_URL"):
        Settings(public_url=bad)


def test_nginx_sends_it_on_the_internal_orthanc_location_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", public_url="https://pacs.example.org/neuronova")
    text = render_nginx(settings).read_text()
    line = 'proxy_set_header Forwarded "host=pacs.example.org/neuronova/api/pacs;proto=https";'
    # The internal Orthanc location, and the one that also stores series metadata.
    starts = [m.start() for m in re.finditer(r"(?m)^\s*location [^{\n]*/internal-orthanc/", text)]
    assert len(starts) == 2 and text.count(line) == 2
    for start in starts:
        internal = text[start:text.index("}", start)]
        assert line in internal
        assert 'proxy_set_header X-Forwarded-Host "";' in internal
