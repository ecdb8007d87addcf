"""Logins per server: tokens go only where they came from, and `watch` outlives them.

Real parts throughout: live `docintel serve` subprocesses, the CLI through
CliRunner or as a subprocess, and small local HTTP servers standing in for a
server that was never logged in to, or that is not docintel at all.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from typer.testing import CliRunner, Result

from docintel.cli.main import app
from tests.conftest import TXTS, ServerProcess, upload, wait_terminal
from tests.relay import Relay

GOOD = TXTS / "quarterly-memo.txt"
NEGATIVE = TXTS / "complaint-negative.txt"

runner = CliRunner()


def cli(*args: str, input: str | None = None, **env: str) -> Result:
    return runner.invoke(app, list(args), input=input, env=env or None)


def stored() -> dict[str, Any]:
    path = Path(os.environ["DOCINTEL_CONFIG_DIR"]) / "login.json"
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def login(url: str, user: str = "alice") -> None:
    result = cli("login", "--url", url, "-u", user, "-p", f"{user}-pw")
    assert result.exit_code == 0, result.output


class Recorder:
    """A plain HTTP server that is not docintel; it records what it was sent.

    Every request gets `status` with an HTML body (`json` bodies on request).
    """

    def __init__(self, status: int = 404, body: str = "<h1>Not Found</h1>") -> None:
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                recorder.requests.append(
                    (self.command, self.path, self.headers.get("Authorization"))
                )
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def two_servers(make_server: Any, tmp_path: Path) -> tuple[ServerProcess, ServerProcess]:
    """Two docintel servers with their own data and their own signing keys."""
    one = make_server(data_dir=tmp_path / "one")
    two = make_server(
        data_dir=tmp_path / "two",
        env={"DOCINTEL_JWT_SECRET": "another-secret-that-is-at-least-32-bytes"},
    )
    return one, two


# --- logins per server ------------------------------------------------------------


def test_logins_to_two_servers_are_kept_apart(
    two_servers: tuple[ServerProcess, ServerProcess],
) -> None:
    one, two = two_servers
    login(one.url, "alice")
    login(two.url, "bob")
    logins = stored()
    assert set(logins["logins"]) == {one.url, two.url}
    assert logins["logins"][one.url]["username"] == "alice"
    assert logins["logins"][two.url]["username"] == "bob"
    assert logins["default"] == two.url  # the last one logged in to

    uploaded = cli("upload", "--url", one.url, "--json", str(GOOD))
    assert uploaded.exit_code == 0, uploaded.output
    (doc,) = [json.loads(line) for line in uploaded.stdout.splitlines()]
    on_one = json.loads(cli("list", "--url", one.url, "--json").stdout)["items"]
    on_two = json.loads(cli("list", "--json").stdout)["items"]  # the default: two
    assert [d["id"] for d in on_one] == [doc["id"]]
    assert on_two == []
    # DOCINTEL_URL picks the server the same way --url does.
    env_listed = cli("list", "--json", DOCINTEL_URL=one.url)
    assert [d["id"] for d in json.loads(env_listed.stdout)["items"]] == [doc["id"]]

    # Logging out of one server leaves the other's login alone.
    assert cli("logout", "--url", two.url).exit_code == 0
    assert set(stored()["logins"]) == {one.url}
    assert cli("list", "--url", one.url).exit_code == 0
    gone = cli("list", "--url", two.url)
    assert gone.exit_code == 3
    assert gone.stderr == (
        f"docintel: not logged in to {two.url} — run `docintel login --url {two.url}`\n"
    )
    assert cli("logout", "--all").exit_code == 0
    assert cli("list", "--url", one.url).exit_code == 3


def test_a_server_with_no_login_never_receives_the_token(
    offline_server: ServerProcess, tmp_path: Path
) -> None:
    login(offline_server.url)
    token = stored()["logins"][offline_server.url]["token"]
    with Recorder(status=200, body="{}") as stranger:
        commands = [
            ["list"],
            ["show", "abcd1234"],
            ["status", "abcd1234"],
            ["delete", "--yes", "abcd1234"],
            ["upload", str(GOOD)],
            ["upload", "--wait", str(GOOD)],
            ["watch", "--json"],
            ["watch", "--json", "abcd1234"],
        ]
        for args in commands:
            for how in ("--url", "DOCINTEL_URL"):
                if how == "--url":
                    result = cli(*args, "--url", stranger.url)
                else:
                    result = cli(*args, DOCINTEL_URL=stranger.url)
                assert result.exit_code == 3, (args, how, result.output)
                assert result.stderr == (
                    f"docintel: not logged in to {stranger.url} — "
                    f"run `docintel login --url {stranger.url}`\n"
                ), (args, how)
        # Not even a request without the token: nothing was sent at all.
        assert stranger.requests == []
        # An explicit DOCINTEL_TOKEN is the user's own choice: it goes where it is told.
        cli("list", "--url", stranger.url, DOCINTEL_TOKEN="my-own-token")
        assert stranger.requests[-1][2] == "Bearer my-own-token"
        assert not any(token in str(r) for r in stranger.requests)
    # The stored login still works against its own server.
    assert cli("list", "--url", offline_server.url).exit_code == 0


def test_a_url_without_a_scheme_is_one_server_with_its_other_spellings(
    offline_server: ServerProcess,
) -> None:
    bare = f"127.0.0.1:{offline_server.port}"
    result = cli("login", "--url", bare, "-u", "alice", "-p", "alice-pw")
    assert result.exit_code == 0, result.output
    assert f"Logged in to {offline_server.url} as alice" in result.stdout
    assert set(stored()["logins"]) == {offline_server.url}
    for spelling in (bare, bare + "/", offline_server.url + "/", f"HTTP://{bare}"):
        listed = cli("list", "--url", spelling, "--json")
        assert listed.exit_code == 0, (spelling, listed.output)
        assert "items" in json.loads(listed.stdout)


def test_a_login_file_of_the_one_slot_kind_still_works(offline_server: ServerProcess) -> None:
    token = offline_server.login()
    path = Path(os.environ["DOCINTEL_CONFIG_DIR"]) / "login.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "url": offline_server.url,
                "token": token,
                "username": "alice",
                "expires_at": time.time() + 3600,
            }
        )
    )
    assert cli("list").exit_code == 0  # its server is the default
    # …and its token still goes nowhere else.
    with Recorder() as stranger:
        assert cli("list", "--url", stranger.url).exit_code == 3
        assert stranger.requests == []


def test_a_hand_edited_login_file_is_no_login_and_login_mends_it(
    offline_server: ServerProcess,
) -> None:
    path = Path(os.environ["DOCINTEL_CONFIG_DIR"]) / "login.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"default": 5, "url": [1], "logins": {"x": 3, "y": {"token": 4}}}))
    listed = cli("list", "--url", offline_server.url)
    assert listed.exit_code == 3 and "not logged in" in listed.stderr  # not a traceback
    logged = cli("login", "--url", offline_server.url, "-u", "alice", "-p", "alice-pw")
    assert logged.exit_code == 0, logged.output
    assert cli("list").exit_code == 0


def test_a_config_dir_that_is_a_file_is_one_line(
    offline_server: ServerProcess, tmp_path: Path
) -> None:
    afile = tmp_path / "not-a-folder"
    afile.write_text("")
    result = cli(
        "login", "--url", offline_server.url, "-u", "alice", "-p", "alice-pw",
        DOCINTEL_CONFIG_DIR=str(afile),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"docintel: cannot use {afile}")
    assert result.stderr.count("\n") == 1


def test_login_without_a_terminal_or_a_username_says_so(offline_server: ServerProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "docintel", "login", "--url", offline_server.url],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == "docintel: no username on stdin to read: give it with -u\n"


def test_a_data_dir_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "data"
    afile.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "docintel", "serve", "--data-dir", str(afile)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr == f"docintel: The data dir {afile} is a file, not a folder.\n"


def test_a_command_late_in_a_tokens_life_refreshes_and_stores_it(
    offline_server: ServerProcess,
) -> None:
    login(offline_server.url)
    path = Path(os.environ["DOCINTEL_CONFIG_DIR"]) / "login.json"
    logins = stored()
    entry = logins["logins"][offline_server.url]
    # As if logged in 50 minutes ago: the token (really valid for an hour) has
    # ten minutes left, so the next command trades it for a fresh one.
    entry["issued_at"], entry["expires_at"] = time.time() - 3000, time.time() + 600
    path.write_text(json.dumps(logins))
    assert cli("list").exit_code == 0
    fresh = stored()["logins"][offline_server.url]
    assert fresh["expires_at"] > time.time() + 3000  # a full lifetime again
    # (within the same second the server may issue the very same token)
    assert jwt.decode(fresh["token"], options={"verify_signature": False})["sub"] == "alice"
    assert stored()["default"] == offline_server.url
    assert cli("list").exit_code == 0  # with the stored fresh token


# --- not a docintel server ----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (404, "<h1>Not Found</h1>", "it answered 404 Not Found with text/html"),
        (200, "<html>Welcome to nginx!</html>", "with text/html, not docintel's JSON"),
    ],
)
def test_a_server_that_is_not_docintel_is_named_as_such(status: int, body: str, says: str) -> None:
    with Recorder(status, body) as other:
        not_ours = f"docintel: the server at {other.url} is not a docintel server ("
        result = cli("login", "--url", other.url, "-u", "alice", "-p", "alice-pw")
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith(not_ours) and says in result.stderr
        assert result.stderr.count("\n") == 1
        # The password was never sent: login looked at /healthz first.
        assert [(m, p) for m, p, _ in other.requests] == [("GET", "/healthz")]

        for args in (
            ["show", "abcd1234"],
            ["status", "abcd1234"],
            ["list"],
            ["delete", "--yes", "abcd1234"],
            ["watch", "--json"],
            ["watch", "--json", "abcd1234"],
        ):
            result = cli(*args, "--url", other.url, DOCINTEL_TOKEN="my-own-token")
            assert result.exit_code == 3, (args, result.output)
            assert result.stderr.startswith(not_ours), (args, result.stderr)
            assert "No document with id" not in result.stderr
            assert result.stderr.count("\n") == 1


# --- refresh, and a watch that lasts --------------------------------------------------


def _lines(stream: Any) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines of a subprocess's pipe, read on a thread (so a test can time out)."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        with stream:
            for line in stream:
                lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


@pytest.fixture
def short_lived(make_server: Any) -> Iterator[ServerProcess]:
    yield make_server(env={"DOCINTEL_TOKEN_TTL": "6", "DOCINTEL_ANALYZER": "offline"})


def test_watch_keeps_going_across_many_token_lifetimes(
    short_lived: ServerProcess, tmp_path: Path
) -> None:
    """Tokens last 6 s; `watch` follows the stream through four of them and more,
    with its connection cut after each document: every reconnect needs a token
    that is still valid, so `watch` must have refreshed it in time."""
    rounds = 4
    with Relay(short_lived.port) as relay:
        url = relay.url
        login(url)
        first = stored()["logins"][url]
        errors = (tmp_path / "watch.err").open("w")
        proc = subprocess.Popen(
            # --since 0: a new server's whole history, so no event is missed while it connects
            [
                sys.executable,
                "-m",
                "docintel",
                "watch",
                "--json",
                "--since",
                "0",
                "--url",
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert proc.stdout is not None
        lines, pump = _lines(proc.stdout)
        completed: list[str] = []
        uploaded: list[str] = []
        try:
            for _ in range(rounds):
                with short_lived.client() as api:
                    (doc,) = upload(api, GOOD).json()["documents"]
                    uploaded.append(doc["id"])
                    wait_terminal(api, [doc["id"]])
                while doc["id"] not in completed:
                    event = json.loads(lines.get(timeout=60))
                    if event["status"] == "completed":
                        completed.append(event["document_id"])
                relay.cut()  # the next events come over a new connection
                time.sleep(6)  # one whole token lifetime passes
            assert proc.poll() is None  # still following
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
            pump.join(10)  # it closes the pipe at its end
            errors.close()
    stderr = (tmp_path / "watch.err").read_text()
    assert completed == uploaded
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "expired" not in stderr and "not logged in" not in stderr
    assert "reconnecting" in stderr  # the cuts were seen, and survived
    # The fresh tokens were stored under the relay's URL, for the next command.
    last = stored()["logins"][url]
    assert last["token"] != first["token"]
    assert last["expires_at"] > first["expires_at"]
