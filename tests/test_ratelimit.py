"""Rate limits: the token bucket itself, and login and upload limits on a live server."""

from __future__ import annotations

import httpx

from docintel.core.ratelimit import RateLimiter
from tests.conftest import ServerProcess, upload


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_over_the_minute() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    assert [limiter.hit("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.hit("k") == 20  # one token comes back every 20 s
    assert limiter.hit("other") == 0
    clock.now += 20
    assert limiter.hit("k") == 0
    clock.now += 600
    assert limiter.retry_after("k") == 0
    assert limiter.retry_after("other") == 0
    assert len(limiter) == 0  # idle keys are forgotten


def test_failed_logins_are_limited_per_username_and_address(make_server) -> None:
    server: ServerProcess = make_server(
        {
            "DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "3",
            "DOCINTEL_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "5",
        }
    )
    login = server.url + "/auth/login"
    for _ in range(3):
        assert httpx.post(login, json={"username": "alice", "password": "guess"}).status_code == 401
    blocked = httpx.post(login, json={"username": "alice", "password": "alice-pw"})
    assert blocked.status_code == 429
    assert blocked.json()["detail"]["code"] == "too_many_attempts"
    assert int(blocked.headers["Retry-After"]) >= 1
    # Another account from the same address has its own 3…
    assert httpx.post(login, json={"username": "bob", "password": "bob-pw"}).status_code == 200
    for _ in range(2):
        assert httpx.post(login, json={"username": "bob", "password": "guess"}).status_code == 401
    # …within the address's 5 failures in all, whichever accounts they were on.
    assert httpx.post(login, json={"username": "bob", "password": "bob-pw"}).status_code == 429


def test_successful_logins_are_not_counted(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_LOGIN_ATTEMPTS_PER_MINUTE": "2"})
    for _ in range(5):
        server.login("alice")


def test_uploads_are_limited_per_user_with_retry_after(make_server) -> None:
    server: ServerProcess = make_server(
        {"DOCINTEL_UPLOADS_PER_MINUTE": "2", "DOCINTEL_ANALYZER": "offline"}
    )
    with server.client("alice") as alice, server.client("bob") as bob:
        for i in range(2):
            assert upload(alice, (f"n{i}.txt", b"A note. Short.")).status_code == 201
        limited = upload(alice, ("n3.txt", b"A note. Short."))
        assert limited.status_code == 429
        assert limited.json()["detail"]["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1
        assert upload(bob, ("b.txt", b"Bob's note. Short.")).status_code == 201
        assert alice.get("/documents").json()["total"] == 2
