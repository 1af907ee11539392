"""/docs and /redoc work offline: every asset they reference is served by the service."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_reference_only_same_origin_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assets = _ASSET.findall(html)
    assert assets, html
    assert "fonts.googleapis.com" not in html
    assert "cdn.jsdelivr.net" not in html
    for url in assets:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    assert "/openapi.json" in html


async def test_docs_csp_allows_the_inline_init_script_by_hash(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    scripts = _INLINE_SCRIPT.findall(response.text)
    assert scripts
    for script in scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "frame-ancestors 'none'" in csp
    # The API keeps its strict policy.
    api = await client.get("/api/v1/nothing")
    assert api.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_swagger_uses_the_password_flow_and_redirect(client: httpx.AsyncClient) -> None:
    html = (await client.get("/docs")).text
    assert "/docs/oauth2-redirect" in html
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "swaggerUIRedirectOauth2" in redirect.text
    schema = (await client.get("/openapi.json")).json()
    flows = [
        scheme.get("flows", {}).get("password")
        for scheme in schema["components"].get("securitySchemes", {}).values()
        if scheme.get("type") == "oauth2"
    ]
    assert any(flow and flow["tokenUrl"].endswith("/api/v1/auth/token") for flow in flows), schema[
        "components"
    ].get("securitySchemes")
