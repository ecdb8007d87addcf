"""Authentication against the live server: login, tokens, and what is refused."""

from __future__ import annotations

import base64
import json
import os
import stat
import time

import httpx
import jwt
import pytest

from docintel.core.config import Settings
from docintel.server.auth import BINDING_CLAIM, Authenticator
from tests.conftest import ServerProcess

SECRET = "test-secret-that-is-at-least-32-bytes-long"  # what conftest gives the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("auth") / "data").start()
    yield server
    server.stop()


def binding(username: str, password: str) -> str:
    """The claim that ties a token to the password it was issued for."""
    settings = Settings(users={username: password}, jwt_secret=SECRET)
    return Authenticator(settings).binding(username, password)


ALICE = binding("alice", "alice-pw")


def token(claims: dict, key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def test_login_with_json_and_with_an_oauth2_form(server: ServerProcess) -> None:
    by_json = httpx.post(
        server.url + "/auth/login", json={"username": "alice", "password": "alice-pw"}
    )
    by_form = httpx.post(
        server.url + "/auth/login", data={"username": "alice", "password": "alice-pw"}
    )
    for response in (by_json, by_form):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "bearer" and body["expires_in"] == 3600
        claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
        assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("password", ["wrong", "", "alice-pw "])
def test_wrong_password_is_401(server: ServerProcess, password: str) -> None:
    response = httpx.post(
        server.url + "/auth/login", json={"username": "alice", "password": password}
    )
    assert response.status_code == 401
    assert response.json()["detail"]["code"] == "invalid_credentials"


def test_unknown_user_and_missing_fields(server: ServerProcess) -> None:
    unknown = httpx.post(server.url + "/auth/login", json={"username": "mallory", "password": "x"})
    assert unknown.status_code == 401
    missing = httpx.post(server.url + "/auth/login", json={"username": "alice"})
    assert missing.status_code == 422
    assert missing.json()["detail"]["code"] == "invalid_request"


def _unsigned(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


NOW = int(time.time())
BAD_TOKENS = {
    "garbage": "not-a-token",
    "expired": token({"sub": "alice", "iat": NOW - 7200, "exp": NOW - 3600}),
    "other key": token(
        {"sub": "alice", "iat": NOW, "exp": NOW + 3600}, key="another-key-of-32-bytes-or-more!!"
    ),
    "alg none": _unsigned({"sub": "alice", "iat": NOW, "exp": NOW + 3600}),
    "no exp": token({"sub": "alice", "iat": NOW}),
    "no sub": token({"iat": NOW, "exp": NOW + 3600}),
    "unknown user": token({"sub": "mallory", "iat": NOW, "exp": NOW + 3600}),
    "no password binding": token({"sub": "alice", "iat": NOW, "exp": NOW + 3600}),
    "another password": token(
        {"sub": "alice", "iat": NOW, "exp": NOW + 3600, BINDING_CLAIM: binding("alice", "old")}
    ),
}


@pytest.mark.parametrize(
    "path", ["/documents", "/documents/abc", "/documents/abc/status", "/documents/stream"]
)
@pytest.mark.parametrize("name", ["missing", *BAD_TOKENS])
def test_every_protected_route_refuses_missing_and_bad_tokens(
    server: ServerProcess, path: str, name: str
) -> None:
    headers = {} if name == "missing" else {"Authorization": f"Bearer {BAD_TOKENS[name]}"}
    response = httpx.get(server.url + path, headers=headers)
    assert response.status_code == 401, (name, path, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["detail"]["code"] in (
        "not_authenticated",
        "invalid_token",
        "token_expired",
    )


def test_upload_and_delete_need_a_token(server: ServerProcess) -> None:
    assert (
        httpx.post(server.url + "/documents/upload", files=[("files", ("a.txt", b"x"))]).status_code
        == 401
    )
    assert httpx.delete(server.url + "/documents/abc").status_code == 401


def test_expired_token_says_so(server: ServerProcess) -> None:
    response = httpx.get(
        server.url + "/documents", headers={"Authorization": f"Bearer {BAD_TOKENS['expired']}"}
    )
    assert response.json()["detail"]["code"] == "token_expired"


def test_stream_accepts_the_token_as_a_query_parameter_and_keeps_it_out_of_the_log(
    server: ServerProcess,
) -> None:
    tok = server.login()
    with httpx.stream(
        "GET", server.url + "/documents/stream", params={"access_token": tok}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
    bad = httpx.get(server.url + "/documents/stream", params={"access_token": "nope"})
    assert bad.status_code == 401
    time.sleep(0.2)
    assert tok not in server.log()
    assert "access_token=[redacted]" in server.log()


def test_a_token_under_an_encoded_key_is_redacted_from_the_log_too(server: ServerProcess) -> None:
    """`access%5Ftoken` and `%61ccess_token` decode to the same key, and authenticate."""
    tok = server.login()
    for key in ("access%5Ftoken", "%61ccess_token", "access_token"):
        # Sent raw, as a client would type it: httpx would re-encode a params dict.
        url = f"{server.url}/documents/stream?{key}={tok}"
        with httpx.stream("GET", url) as response:
            assert response.status_code == 200, key
    time.sleep(0.2)
    log = server.log()
    assert tok not in log
    assert tok.split(".")[1] not in log  # not even the claims
    assert "access%5Ftoken=[redacted]" in log and "%61ccess_token=[redacted]" in log


def test_public_routes(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/documents/upload" in schema["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200


def test_generated_secret_is_kept_0600_and_tokens_survive_a_restart(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_JWT_SECRET": ""})
    tok = server.login()
    secret_file = server.data_dir / "jwt_secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 32
    server.stop()
    server.start()
    response = httpx.get(server.url + "/documents", headers={"Authorization": f"Bearer {tok}"})
    assert response.status_code == 200


def test_default_users_log_a_warning(make_server) -> None:
    server: ServerProcess = make_server({"DOCINTEL_USERS": ""})
    assert "DOCINTEL_USERS is not set" in server.log()
    assert (
        httpx.post(
            server.url + "/auth/login", json={"username": "demo", "password": "demo"}
        ).status_code
        == 200
    )


def test_an_empty_secret_file_left_by_a_crash_is_replaced(make_server, tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "jwt_secret").write_text("")
    server: ServerProcess = make_server({"DOCINTEL_JWT_SECRET": ""}, data_dir=data)
    token = server.login()
    assert len((data / "jwt_secret").read_text().strip()) >= 32
    assert stat.S_IMODE(os.stat(data / "jwt_secret").st_mode) == 0o600
    assert (
        httpx.get(
            server.url + "/documents", headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )


@pytest.mark.parametrize("value", ["²", "99999999999999999999999", "-1", "1e3"])
def test_odd_last_event_ids_are_a_400(server: ServerProcess, value: str) -> None:
    token = server.login()
    by_query = httpx.get(
        server.url + "/documents/stream", params={"last_event_id": value, "access_token": token}
    )
    assert by_query.status_code == 400
    assert by_query.json()["detail"]["code"] == "invalid_last_event_id"


# --- POST /auth/refresh ---------------------------------------------------------


def test_refresh_gives_a_fresh_token_of_a_full_lifetime(server: ServerProcess) -> None:
    old = token({"sub": "alice", "iat": NOW - 3000, "exp": NOW + 600, BINDING_CLAIM: ALICE})
    # (10 minutes left)
    response = httpx.post(server.url + "/auth/refresh", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 3600
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 3600
    assert claims["exp"] > NOW + 600
    fresh = {"Authorization": f"Bearer {body['access_token']}"}
    assert httpx.get(server.url + "/documents", headers=fresh).status_code == 200


@pytest.mark.parametrize("name", ["missing", *BAD_TOKENS])
def test_refresh_refuses_missing_expired_and_invalid_tokens(
    server: ServerProcess, name: str
) -> None:
    headers = {} if name == "missing" else {"Authorization": f"Bearer {BAD_TOKENS[name]}"}
    response = httpx.post(server.url + "/auth/refresh", headers=headers)
    assert response.status_code == 401, (name, response.text)
    assert response.json()["detail"]["code"] in (
        "not_authenticated",
        "invalid_token",
        "token_expired",
    )
    # Only a header will do: a token in the query string is not taken here.
    if name == "missing":
        query = httpx.post(server.url + "/auth/refresh", params={"access_token": server.login()})
        assert query.status_code == 401
