"""The edge's pure parts: the error log filter, refusal descriptions, NEURONOVA_PUBLIC_URL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from neuronova_lib.config import Settings
from neuronova_lib.nginx_refusals import nginx_refusal, upstream_names
from neuronova_lib.stack.nginx_log import check_socket_path, format_line, redact

JWT = ("eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.eyJzdWIiOiJjbGluIiwianRpIjoiYWJjIn0."
       "Xc7HZlcxIdosCcmtCXiNk48__TJMpCR8ago9tce-H_LGMyLnhVGBuU3xzAU2dWyW0nbOMBHONJCZ")


@pytest.mark.parametrize("text", [
    f'request: "GET /api/pacs/dicom-web/studies/1.2?token={JWT} HTTP/1.1"',
    f'request: "GET /x?includefield=all&TOKEN={JWT}&limit=1 HTTP/1.1"',
    f'upstream: "http://127.0.0.1:1/x?token%3D{JWT}"',
    f'referrer: "https://viewer/?StudyInstanceUIDs=1.2&token={JWT[:60]}"',
    f"Authorization: Bearer {JWT}",
    f"a JWT on its own {JWT} and cut short {JWT[:50]}",
])
def test_redact_removes_every_part_of_a_token(text: str) -> None:
    clean = redact(text)
    for part in (JWT, *JWT.split("."), JWT[:50]):
        assert part not in clean
    assert "redacted" in clean


def test_redact_keeps_the_rest_of_the_line() -> None:
    line = f'request: "GET /api/pacs/dicom-web/studies/1.2?limit=5&token={JWT}&offset=0 HTTP/1.1"'
    assert redact(line) == ('request: "GET /api/pacs/dicom-web/studies/1.2?limit=5&'
                            'token=[redacted]&offset=0 HTTP/1.1"')


def test_format_line_drops_the_syslog_header() -> None:
    datagram = (f"<11>Dec  6 23:08:03 nginx: 2026/12/06 23:08:03 [error] 1#1: *2 failed, "
                f'request: "GET /x?token={JWT} HTTP/1.1"').encode()
    assert format_line(datagram) == ('2026/12/06 23:08:03 [error] 1#1: *2 failed, '
                                     'request: "GET /x?token=[redacted] HTTP/1.1"\n')


def test_a_socket_path_too_long_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="NEURONOVA_HOME"):
        check_socket_path(tmp_path / ("x" * 120) / "nginx-log.sock")


def test_refusals_name_the_service_that_failed() -> None:
    settings = Settings(orthanc_port=8142, proxy_port=8102, api_port=8101)
    # The guard answered (X-Accel-Redirect), then Orthanc could not be reached.
    assert upstream_names("127.0.0.1:8102 : 127.0.0.1:8142", settings) == ["orthanc"]
    assert upstream_names("127.0.0.1:8101", settings) == ["api"]
    assert nginx_refusal(502, "", "127.0.0.1:8102", settings) == (
        "upstream_unavailable", "guard unreachable (answered by nginx)")
    assert nginx_refusal(504, None, "127.0.0.1:8142", settings)[0] == "upstream_timeout"
    reason, detail = nginx_refusal(429, "token_concurrency", "", settings)
    assert reason == "token_concurrency" and str(settings.token_concurrency) in detail
    assert nginx_refusal(429, "rate_limited", "", settings)[0] == "rate_limited"
    assert nginx_refusal(400, "traversal", None, settings)[0] == "traversal"


def test_public_url_defaults_to_the_local_nginx_address() -> None:
    settings = Settings(host="127.0.0.1", port=9000)
    assert settings.public_url == settings.local_url == "http://127.0.0.1:9000"
    behind = Settings(public_url="https://pacs.example.org/neuronova/", port=9000)
    assert behind.public_url == "https://pacs.example.org/neuronova"
    assert behind.local_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize("bad", ["pacs.example.org", "ftp://pacs.example.org",
                                 "https://pacs.example.org/?a=1", "https://x/#top", "/neuronova"])
def test_public_url_must_be_an_absolute_http_url(bad: str) -> None:
    with pytest.raises(ValidationError, match="NEURONOVA_PUBLIC_URL"):
        Settings(public_url=bad)
