"""The edge: request ids, timing, security headers, CORS, body-size limit, time budget."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request

from tests.conftest import AppFactory, problem

API_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "strict-origin-when-cross-origin",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def _add_routes(app: FastAPI) -> None:
    @app.post("/api/v1/_test/echo")
    async def echo(payload: dict[str, object]) -> dict[str, int]:
        return {"keys": len(payload)}

    @app.post("/api/v1/_test/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    @app.get("/api/v1/_test/slow")
    async def slow() -> dict[str, str]:
        await anyio.sleep(30)
        return {"status": "done"}


@pytest.fixture
async def edge(make_app: AppFactory) -> tuple[FastAPI, httpx.AsyncClient]:
    app, client = await make_app(
        allowed_origins=["https://app.example.com"], request_timeout_seconds=0.2
    )
    _add_routes(app)
    return app, client


async def test_request_id_is_echoed_when_sane(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    for request_id in ("abc-123", "A.b_c-9", "x" * 128):
        response = await client.get("/health", headers={"X-Request-ID": request_id})
        assert response.headers["x-request-id"] == request_id


@pytest.mark.parametrize(
    "bad", ["x" * 129, "has space", "semi;colon", "new\u00e9", "<script>", "a/b", ""]
)
async def test_bad_request_id_is_replaced(
    edge: tuple[FastAPI, httpx.AsyncClient], bad: str
) -> None:
    _, client = edge
    response = await client.get("/api/v1/no-such", headers=[(b"X-Request-ID", bad.encode())])
    generated = response.headers["x-request-id"]
    assert generated != bad
    assert len(generated) == 32
    assert int(generated, 16) >= 0
    assert response.json()["request_id"] == generated


async def test_request_id_generated_and_unique(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


async def test_process_time_header(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    value = (await client.get("/health")).headers["x-process-time"]
    assert float(value) >= 0
    assert len(value.split(".")[1]) == 4


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/health", 200), ("GET", "/api/v1/missing", 404), ("DELETE", "/health", 405)],
)
async def test_security_headers_on_success_and_error(
    edge: tuple[FastAPI, httpx.AsyncClient], method: str, path: str, status: int
) -> None:
    _, client = edge
    response = await client.request(method, path)
    assert response.status_code == status
    for name, value in API_HEADERS.items():
        assert response.headers[name] == value, name
    assert "strict-transport-security" not in response.headers
    assert "x-request-id" in response.headers
    assert "x-process-time" in response.headers


async def test_hsts_only_over_https(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, _ = edge
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://testserver"
    ) as https_client:
        response = await https_client.get("/health")
    assert response.headers["strict-transport-security"].startswith("max-age=")


async def test_cors_allowed_origin(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    response = await client.get("/health", headers={"Origin": "https://app.example.com"})
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert response.headers["access-control-allow-credentials"] == "true"
    exposed = response.headers["access-control-expose-headers"].lower()
    for name in ("x-request-id", "etag", "location", "x-total-count", "retry-after"):
        assert name in exposed


async def test_cors_denied_origin(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    response = await client.get("/health", headers={"Origin": "https://evil.example.net"})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/api/v1/tasks",
        headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"},
    )
    # Refused like every other error: problem+json 403 (API.md §2), never plain text.
    body = problem(preflight, 403, "FORBIDDEN")
    assert "origin" in body["detail"]
    assert "access-control-allow-origin" not in preflight.headers
    assert "Origin" in preflight.headers["vary"]
    for refused, headers in (
        ("method", {"Access-Control-Request-Method": "TRACE"}),
        (
            "headers",
            {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "X-Evil"},
        ),
    ):
        response = await client.options(
            "/api/v1/tasks", headers={"Origin": "https://app.example.com", **headers}
        )
        assert refused in problem(response, 403, "FORBIDDEN")["detail"]


async def test_cors_preflight(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    response = await client.options(
        "/api/v1/tasks",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "Authorization, Content-Type, If-Match",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "PATCH" in response.headers["access-control-allow-methods"]
    assert "if-match" in response.headers["access-control-allow-headers"].lower()
    # Preflights carry the request context too.
    assert "x-request-id" in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_cors_headers_on_edge_errors(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    response = await client.post(
        "/api/v1/_test/echo",
        content=b"x" * (2 * 1024 * 1024),
        headers={"Origin": "https://app.example.com", "Content-Type": "application/json"},
    )
    problem(response, 413, "PAYLOAD_TOO_LARGE")
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"


async def test_wildcard_origin_never_with_credentials(make_app: AppFactory) -> None:
    _, client = await make_app(allowed_origins=["*"])
    response = await client.get("/health", headers={"Origin": "https://anyone.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_content_length_over_limit_is_413_at_once(
    edge: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = edge
    response = await client.post(
        "/api/v1/_test/raw",
        content=b"{}" + b" " * (1024 * 1024),
        headers={"Content-Type": "application/json"},
    )
    problem(response, 413, "PAYLOAD_TOO_LARGE")


async def test_body_under_limit_passes(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    response = await client.post(
        "/api/v1/_test/raw",
        content=b" " * (1024 * 1024 - 10) + b"{}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"size": 1024 * 1024 - 8}


async def test_chunked_50_mib_body_is_cut_with_flat_memory(
    edge: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _, client = edge
    chunk_size, chunks = 64 * 1024, 800  # 50 MiB in total
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(chunks):
            sent += 1
            yield b"x" * chunk_size

    tracemalloc.start()
    try:
        response = await client.post(
            "/api/v1/_test/echo", content=body(), headers={"Content-Type": "application/json"}
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    problem(response, 413, "PAYLOAD_TOO_LARGE")
    # Cut at the limit: the server stopped reading long before the end of the stream...
    assert sent < chunks // 4
    # ...and never held more than a few MiB (the limit is 1 MiB; the body was 50).
    assert peak < 8 * 1024 * 1024, peak


async def test_upload_limit_applies_to_multipart(make_app: AppFactory) -> None:
    app, client = await make_app(max_body_bytes=1024, max_upload_bytes=64 * 1024)

    @app.post("/api/v1/_test/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"size": len(await request.body())}

    # A multipart upload over the JSON limit but under the upload limit passes...
    files = {"file": ("a.bin", b"a" * 10_000, "application/octet-stream")}
    assert (await client.post("/api/v1/_test/raw", files=files)).status_code == 200
    # ...and one over the upload limit and its 64 KiB framing allowance does not.
    files = {"file": ("a.bin", b"a" * 140_000, "application/octet-stream")}
    problem(await client.post("/api/v1/_test/raw", files=files), 413, "PAYLOAD_TOO_LARGE")
    # The JSON limit still holds for everything else.
    problem(
        await client.post("/api/v1/_test/raw", content=b"a" * 2000),
        413,
        "PAYLOAD_TOO_LARGE",
    )


async def test_slow_request_is_504(edge: tuple[FastAPI, httpx.AsyncClient]) -> None:
    _, client = edge
    response = await client.get("/api/v1/_test/slow", headers={"X-Request-ID": "slow-1"})
    body = problem(response, 504, "REQUEST_TIMEOUT")
    assert body["request_id"] == "slow-1"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_response_without_origin_still_varies_by_origin(client: httpx.AsyncClient) -> None:
    """The CORS gate skips Starlette's work for Origin-less requests but keeps Vary: Origin."""
    response = await client.get("/health")
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-origin" not in response.headers
    with_origin = await client.get("/health", headers={"Origin": "http://localhost:3000"})
    assert with_origin.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "Origin" in with_origin.headers["vary"]
