"""Cross-origin use is off unless DOCINTEL_CORS_ORIGINS names the page's origin."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServerProcess

PAGE = "http://page.example:8080"


def preflight(server: ServerProcess, origin: str) -> httpx.Response:
    return httpx.options(
        server.url + "/documents",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )


def test_no_origin_is_allowed_by_default(make_server: Any) -> None:
    server: ServerProcess = make_server()
    answer = preflight(server, PAGE)
    assert "access-control-allow-origin" not in answer.headers
    with server.client() as alice:
        listed = alice.get("/documents", headers={"Origin": PAGE})
    assert listed.status_code == 200
    assert "access-control-allow-origin" not in listed.headers


def test_listed_origins_may_call_the_api_and_others_may_not(make_server: Any) -> None:
    server: ServerProcess = make_server({"DOCINTEL_CORS_ORIGINS": f"{PAGE}/, http://other.test"})
    allowed = preflight(server, PAGE)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == PAGE
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    with server.client() as alice:
        listed = alice.get("/documents", headers={"Origin": PAGE})
    assert listed.headers["access-control-allow-origin"] == PAGE
    refused = preflight(server, "http://evil.test")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_the_event_stream_answers_listed_origins_too(make_server: Any) -> None:
    """The stream is served outside FastAPI's per-request machinery, but still
    inside the app's middleware: its 200 and its refusals carry the CORS headers."""
    server: ServerProcess = make_server({"DOCINTEL_CORS_ORIGINS": PAGE})
    token = server.login()
    with httpx.stream(
        "GET",
        server.url + "/documents/stream",
        params={"access_token": token},
        headers={"Origin": PAGE},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == PAGE
        assert stream.headers["access-control-expose-headers"]
    refused = httpx.get(
        server.url + "/documents/stream",
        params={"access_token": "not-a-token"},
        headers={"Origin": PAGE},
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == PAGE
