"""The OpenAPI pages the README names answer through nginx, with no asset from a CDN."""

from __future__ import annotations

from typing import Any

import pytest
import requests

pytestmark = pytest.mark.e2e  # the session platform


@pytest.mark.parametrize("prefix", ["/api", "/api/pacs"])
def test_docs_pages_answer_through_nginx(platform: Any, prefix: str) -> None:
    page = requests.get(f"{platform.url}{prefix}/docs", timeout=10)
    assert page.status_code == 200, page.text[:300]
    assert "swagger-ui" in page.text and "cdn." not in page.text
    assert f"{prefix}/docs-static/swagger-ui-bundle.js" in page.text
    assert f"'{prefix}/openapi.json'" in page.text or f'"{prefix}/openapi.json"' in page.text
    script = requests.get(f"{platform.url}{prefix}/docs-static/swagger-ui-bundle.js", timeout=10)
    assert script.status_code == 200 and len(script.content) > 100_000
    schema = requests.get(f"{platform.url}{prefix}/openapi.json", timeout=10)
    assert schema.status_code == 200 and schema.json()["paths"]


def test_guard_schema_describes_the_guard(platform: Any) -> None:
    schema = requests.get(f"{platform.url}/api/pacs/openapi.json", timeout=10).json()
    assert schema["info"]["title"] == "NeuroNova guard proxy"
    assert "/api/pacs/sign" in schema["paths"]
