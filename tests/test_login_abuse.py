"""Abuse of the one route anyone may call: oversized and malformed logins, lockout
of a real user, tokens that outlive a password, and signing keys too short to hold.

Against the live server, with raw sockets where the attack is a body that never
ends, and a second loopback address (127.0.0.2) as a second client: the server
does not trust proxy headers, so only the socket's address tells clients apart.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from docintel.core.config import ConfigError, Settings
from tests.conftest import ServerProcess, free_port

LOGIN = "/auth/login"
MB = 1024 * 1024
RSS_GROWTH_KB = 30 * 1024  # generous: the attacks below used to cost 300 MB and more
JSON_START = b'{"username": "alice", "password": "'
MULTIPART = "multipart/form-data; boundary=xyz"
MULTIPART_START = (
    b'--xyz\r\nContent-Disposition: form-data; name="password"; filename="p.bin"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def from_address(source: str) -> httpx.Client:
    """A client whose connections come from `source` (any 127.x.y.z reaches 127.0.0.1)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before a response: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        more = sock.recv(65536)
        assert more, "connection closed in the middle of the response"
        body += more
    return int(status_line.split()[1]), headers, body


def request_head(port: int, content_type: str, framing: str) -> bytes:
    return (
        f"POST {LOGIN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\n{framing}\r\n\r\n"
    ).encode()


def declared_300_mb(port: int, content_type: str, start: bytes) -> tuple[int, bytes, float]:
    """Declare a 300 MB body, send its start and 1 MB of it: (status, body, seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        began = time.monotonic()
        sock.sendall(request_head(port, content_type, f"Content-Length: {300 * MB}"))
        sock.sendall(start + b"a" * MB)
        status, _, body = read_response(sock)
        return status, body, time.monotonic() - began


def chunked_up_to(port: int, content_type: str, start: bytes, total: int) -> tuple[int, bytes, int]:
    """Stream a chunked body of up to `total` bytes, stopping once the server has
    answered: (status, body, bytes sent)."""
    chunk = b"a" * 65536
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head(port, content_type, "Transfer-Encoding: chunked"))
        sock.sendall(b"%x\r\n%s\r\n" % (len(start), start))
        sent = len(start)
        while sent < total and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
        status, _, body = read_response(sock)
        return status, body, sent


def assert_too_large(status: int, body: bytes) -> None:
    assert status == 413, body
    detail = json.loads(body)["detail"]
    assert detail["code"] == "login_too_large"
    assert "at most 8 KB" in detail["message"]


# --- oversized logins -----------------------------------------------------------------


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """An empty directory given to the server as TMPDIR: anything spooled shows up here."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


def test_a_300_mb_login_is_refused_at_once_without_reading_it(
    make_server: Any, spool: Path
) -> None:
    server: ServerProcess = make_server(env={"TMPDIR": str(spool)})
    before = server.rss_kb()
    for content_type, start in (("application/json", JSON_START), (MULTIPART, MULTIPART_START)):
        status, body, seconds = declared_300_mb(server.port, content_type, start)
        assert_too_large(status, body)
        assert seconds < 10  # answered, not waiting for the other 299 MB
    assert server.rss_kb() - before < RSS_GROWTH_KB
    assert list(spool.iterdir()) == []
    # The server is fine, and the right password still works from here: two
    # oversized logins are two failures, far below the address's limit.
    assert server.login("alice")


def test_a_chunked_login_is_cut_off_at_the_limit(make_server: Any, spool: Path) -> None:
    """No Content-Length to check: the bytes are counted as they arrive."""
    server: ServerProcess = make_server(env={"TMPDIR": str(spool)})
    before = server.rss_kb()
    for content_type, start in (("application/json", JSON_START), (MULTIPART, MULTIPART_START)):
        status, body, sent = chunked_up_to(server.port, content_type, start, 50 * MB)
        assert_too_large(status, body)
        assert server.rss_kb() - before < RSS_GROWTH_KB, sent
    assert list(spool.iterdir()) == []
    assert server.login("alice")


def test_logins_within_the_limit_still_work_in_every_form(make_server: Any) -> None:
    server: ServerProcess = make_server()
    url = server.url + LOGIN
    credentials = {"username": "alice", "password": "alice-pw"}
    by_json = httpx.post(url, json=credentials)
    # An OAuth2 password form carries more fields than these two.
    by_form = httpx.post(url, data={**credentials, "grant_type": "password", "scope": ""})
    by_multipart = httpx.post(
        url, files={"username": (None, "alice"), "password": (None, "alice-pw")}
    )
    padded = httpx.post(url, json={**credentials, "note": "x" * 7000})  # under 8 KB in all
    for response in (by_json, by_form, by_multipart, padded):
        assert response.status_code == 200, response.text
        assert (
            jwt.decode(response.json()["access_token"], options={"verify_signature": False})["sub"]
            == "alice"
        )
    # A file where the password should be is not a login.
    with_file = httpx.post(url, data={"username": "alice"}, files={"password": ("p", b"alice-pw")})
    assert with_file.status_code == 422
    assert with_file.json()["detail"]["code"] == "invalid_request"


# --- malformed logins count ----------------------------------------------------------


def test_malformed_logins_count_against_the_address(make_server: Any) -> None:
    server: ServerProcess = make_server(env={"DOCINTEL_LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE": "5"})
    url = server.url + LOGIN
    json_type = {"Content-Type": "application/json"}
    answers = [
        httpx.post(url, content=b'{"username": "alice", ', headers=json_type).status_code,
        httpx.post(url, json={"username": "alice"}).status_code,
        httpx.post(
            url, content=b"alice alice-pw", headers={"Content-Type": "text/plain"}
        ).status_code,
        httpx.post(
            url,
            content=b"\xff\xfe=\xff",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ).status_code,
        httpx.post(url, content=b"{" + b" " * 9000 + b"}", headers=json_type).status_code,
    ]
    assert answers == [422, 422, 422, 422, 413]
    limited = httpx.post(url, json={"username": "alice", "password": "alice-pw"})
    assert limited.status_code == 429
    assert limited.json()["detail"]["code"] == "too_many_attempts"
    assert int(limited.headers["Retry-After"]) >= 1
    # Only that address: the same user from another one is let in.
    with from_address("127.0.0.2") as elsewhere:
        ok = elsewhere.post(url, json={"username": "alice", "password": "alice-pw"})
        assert ok.status_code == 200, ok.text


# --- lockout of a real user ----------------------------------------------------------


def test_an_attacker_cannot_lock_a_user_out(make_server: Any) -> None:
    """The issue's attack, with the default limits (10 per username and address,
    30 per address): guessing alice's password from one address limits that
    address, never alice."""
    server: ServerProcess = make_server()
    url = server.url + LOGIN
    wrong = {"username": "alice", "password": "guess"}
    right = {"username": "alice", "password": "alice-pw"}
    with from_address("127.0.0.1") as attacker, from_address("127.0.0.2") as alice:
        assert [attacker.post(url, json=wrong).status_code for _ in range(10)] == [401] * 10
        guessing = attacker.post(url, json=wrong)
        assert guessing.status_code == 429
        assert int(guessing.headers["Retry-After"]) >= 1
        # The attacker learns nothing from the right password either.
        assert attacker.post(url, json=right).status_code == 429
        # alice, elsewhere, logs in; her token works.
        response = alice.post(url, json=right)
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        listed = alice.get(server.url + "/documents", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200
        # A colleague behind the attacker's address is not locked out by alice's
        # 10 failures either…
        assert attacker.post(url, json={"username": "bob", "password": "bob-pw"}).status_code == 200
        # …until that address has failed 30 times in all, on any usernames.
        sprayed = [
            attacker.post(url, json={"username": f"user{i}", "password": "guess"}).status_code
            for i in range(21)
        ]
        assert sprayed == [401] * 20 + [429]
        limited = attacker.post(url, json={"username": "bob", "password": "bob-pw"})
        assert limited.status_code == 429
        assert limited.json()["detail"]["code"] == "too_many_attempts"
        assert alice.post(url, json=right).status_code == 200


# --- tokens bound to the password -------------------------------------------------------


def test_a_token_stops_working_when_its_users_password_changes(make_server: Any) -> None:
    server: ServerProcess = make_server(env={"DOCINTEL_ANALYZER": "offline"})
    alice_old, bob_token = server.login("alice"), server.login("bob")
    claims = jwt.decode(alice_old, options={"verify_signature": False})
    assert "alice-pw" not in json.dumps(claims)  # bound by a keyed digest, not the password

    server.stop()
    server.extra_env["DOCINTEL_USERS"] = "alice:alice-new-pw,bob:bob-pw"
    server.start()

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    refused = [
        httpx.get(server.url + "/documents", headers=bearer(alice_old)),
        httpx.post(server.url + "/auth/refresh", headers=bearer(alice_old)),
        httpx.get(server.url + "/documents/stream", headers=bearer(alice_old)),
        httpx.get(server.url + "/documents/stream", params={"access_token": alice_old}),
    ]
    for response in refused:
        assert response.status_code == 401, response.text
        detail = response.json()["detail"]
        assert detail["code"] == "invalid_token"
        assert detail["message"] == (
            "The token was issued before the user's password changed; log in again."
        )
    old_password = httpx.post(
        server.url + LOGIN, json={"username": "alice", "password": "alice-pw"}
    )
    assert old_password.status_code == 401
    # bob's password did not change: his token, and its refresh, still work.
    assert httpx.get(server.url + "/documents", headers=bearer(bob_token)).status_code == 200
    refreshed = httpx.post(server.url + "/auth/refresh", headers=bearer(bob_token))
    assert refreshed.status_code == 200
    fresh = refreshed.json()["access_token"]
    assert httpx.get(server.url + "/documents", headers=bearer(fresh)).status_code == 200
    # alice's new password gives a token that works.
    alice_new = server.login("alice", "alice-new-pw")
    assert httpx.get(server.url + "/documents", headers=bearer(alice_new)).status_code == 200


# --- signing keys ----------------------------------------------------------------------


def test_serve_refuses_a_3_byte_jwt_secret(tmp_path: Path) -> None:
    env = {**os.environ, "DOCINTEL_USERS": "alice:alice-pw", "DOCINTEL_JWT_SECRET": "abc"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "docintel",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "docintel: DOCINTEL_JWT_SECRET must be at least 32 bytes (it has 3): "
    )
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(("secret", "ok"), [("x" * 31, False), ("é" * 16, True), ("x" * 32, True)])
def test_the_secret_is_measured_in_bytes(secret: str, ok: bool) -> None:
    environ = {"DOCINTEL_JWT_SECRET": secret}
    if ok:
        assert Settings.from_env(environ).jwt_secret == secret
    else:
        with pytest.raises(ConfigError, match="at least 32 bytes"):
            Settings.from_env(environ)
