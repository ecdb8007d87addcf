"""The `docintel` CLI against a real server: CliRunner, a subprocess, and a pty."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from docintel import __version__
from docintel.cli.main import app
from tests.conftest import (
    PDFS,
    REPO,
    TXTS,
    ServerProcess,
    openai_env,
    upload,
    wait_status,
    wait_terminal,
)
from tests.fake_openai import FakeOpenAI
from tests.relay import Relay

GOOD = TXTS / "quarterly-memo.txt"
NEGATIVE = TXTS / "complaint-negative.txt"
EMPTY = TXTS / "empty.txt"
LOCKED = PDFS / "libreoffice-writer-password.pdf"  # accepted, then fails: password-protected

runner = CliRunner()


def cli(*args: str, input: str | None = None, **env: str) -> Result:
    return runner.invoke(app, list(args), input=input, env=env or None)


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def watch_process(url: str, token: str, *args: str) -> subprocess.Popen[str]:
    """`docintel watch ARGS` in a process of its own, on `url` with `token`."""
    return subprocess.Popen(
        [sys.executable, "-m", "docintel", "watch", *args],
        env={**os.environ, "DOCINTEL_URL": url, "DOCINTEL_TOKEN": token},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def config_dir() -> Path:
    return Path(os.environ["DOCINTEL_CONFIG_DIR"])


@pytest.fixture
def server(offline_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """The module's server, with this test logged in to it as alice."""
    monkeypatch.setenv("DOCINTEL_URL", offline_server.url)
    result = cli("login", "--username", "alice", "--password", "alice-pw")
    assert result.exit_code == 0, result.output
    return offline_server


# --- basics -------------------------------------------------------------------


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"docintel {__version__}"


@pytest.mark.parametrize(
    "command", ["serve", "login", "upload", "watch", "list", "show", "status", "delete", "analyze"]
)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = cli(command, "--help", COLUMNS="120")
    assert result.exit_code == 0
    assert re.search(rf"Example:\s+docintel {command}\b", result.stdout)


def test_usage_error_exits_2() -> None:
    assert cli("list", "--limit", "zero").exit_code == 2
    assert cli("list", "--status", "done").exit_code == 2
    assert cli("frobnicate").exit_code == 2


# --- login ----------------------------------------------------------------------


def test_login_prompts_and_writes_a_0600_file(offline_server: ServerProcess) -> None:
    result = cli("login", "--url", offline_server.url, input="alice\nalice-pw\n")
    assert result.exit_code == 0, result.output
    assert "alice-pw" not in result.output  # the password prompt does not echo
    assert "valid until" in result.stdout
    path = config_dir() / "login.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(path.read_text())
    assert stored["default"] == offline_server.url
    assert stored["logins"][offline_server.url]["username"] == "alice"
    assert stored["logins"][offline_server.url]["expires_at"] > time.time() + 3000
    # The stored URL and token are used from now on, with no DOCINTEL_URL.
    listed = cli("list", "--json")
    assert listed.exit_code == 0, listed.output
    assert "items" in json.loads(listed.stdout)


def test_wrong_password_exits_3(offline_server: ServerProcess) -> None:
    result = cli("login", "--url", offline_server.url, "-u", "alice", "-p", "nope")
    assert result.exit_code == 3
    assert result.stderr.strip() == "docintel: wrong username or password"
    assert not (config_dir() / "login.json").exists()


def test_not_logged_in_is_a_one_line_hint(offline_server: ServerProcess) -> None:
    result = cli("list", DOCINTEL_URL=offline_server.url)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert "docintel login" in result.stderr
    assert "Traceback" not in result.output


def test_expired_or_bad_token_exits_3(server: ServerProcess) -> None:
    path = config_dir() / "login.json"
    stored = json.loads(path.read_text())
    stored["logins"][server.url]["expires_at"] = time.time() - 10
    path.write_text(json.dumps(stored))
    result = cli("list")
    assert result.exit_code == 3
    assert "expired" in result.stderr
    assert f"docintel login --url {server.url}" in result.stderr
    # DOCINTEL_TOKEN overrides the stored one; the server rejects a bad one.
    result = cli("list", DOCINTEL_TOKEN="not-a-token")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        f"docintel: the server at {server.url} refused the token in DOCINTEL_TOKEN "
        "(The token is not valid; log in again.)"
    )


def test_https_to_a_plain_http_server_says_so(server: ServerProcess) -> None:
    https = server.url.replace("http://", "https://", 1)
    result = cli("login", "--url", https, "-u", "alice", "-p", "alice-pw")
    assert result.exit_code == 3
    (line,) = result.stderr.splitlines()
    assert "did not complete a TLS handshake" in line and line.endswith(f"use {server.url}")


def test_unreachable_server_and_bad_url_exit_3(server: ServerProcess) -> None:
    from tests.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    for args in (["list"], ["status", "abcd"], ["upload", str(GOOD)], ["watch", "--json"]):
        # No login is stored for `dead`: only an explicit token is sent there.
        result = cli(*args, DOCINTEL_URL=dead, DOCINTEL_TOKEN="a-token")
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr == (
            f"docintel: cannot reach the server at {dead} — is `docintel serve` running?\n"
        )
        assert result.stdout == ""
    for bad in ("ftp://example.com", "http://", "http://user:pw@example.com", "http://[::1"):
        result = cli("list", DOCINTEL_URL=bad)
        assert result.exit_code == 3, (bad, result.output)
        assert "invalid server URL" in result.stderr
        assert result.stderr.count("\n") == 1


# --- upload -----------------------------------------------------------------------


def test_upload_prints_one_line_per_file(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (tmp_path / "a [draft].txt").write_text("Brackets in a name are not markup.\n")
    result = cli(
        "upload",
        str(GOOD),
        str(EMPTY),
        str(tmp_path / "photo.png"),
        str(tmp_path / "*.txt"),
        str(tmp_path / "missing.txt"),
    )
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5, lines
    by_name = {line.split("  ")[1]: line for line in lines}
    assert by_name["quarterly-memo.txt"].startswith("accepted  ")
    assert by_name["a [draft].txt"].startswith("accepted  ")  # the glob, escaped
    assert by_name["empty.txt"].startswith("rejected  ") and "empty" in by_name["empty.txt"]
    assert by_name["photo.png"].startswith("rejected  ") and ".pdf" in by_name["photo.png"]
    assert "no such file" in by_name[str(tmp_path / "missing.txt")]
    ids = [line.split("  ")[2] for line in lines if line.startswith("accepted")]
    with server.client() as client:
        assert {client.get(f"/documents/{i}").status_code for i in ids} == {200}

    result = cli("upload", str(tmp_path / "*.txt"))
    assert result.exit_code == 0, result.output


def test_upload_wait_prints_outcomes(server: ServerProcess) -> None:
    result = cli("upload", "--wait", str(GOOD), str(LOCKED))
    assert result.exit_code == 1, result.output  # one of them failed
    lines = result.stdout.splitlines()
    assert [line.split("  ")[0] for line in lines[:2]] == ["accepted", "accepted"]
    outcomes = {line.split("  ")[1]: line for line in lines[2:]}
    assert outcomes["quarterly-memo.txt"].startswith("completed  ")
    assert "third quarter" in outcomes["quarterly-memo.txt"]  # the summary
    assert outcomes[LOCKED.name].startswith("failed  ")
    assert "password" in outcomes[LOCKED.name]

    ok = cli("upload", "--wait", str(NEGATIVE))
    assert ok.exit_code == 0, ok.output


def test_upload_wait_json_in_a_subprocess(server: ServerProcess) -> None:
    """The installed command, end to end: JSON lines, ending when both are terminal."""
    env = {**os.environ, "DOCINTEL_URL": server.url}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "docintel",
            "upload",
            "--wait",
            "--json",
            str(GOOD),
            str(LOCKED),
            str(EMPTY),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    records = json_lines(proc.stdout)
    uploaded = [r for r in records if r["event"] == "uploaded"]
    rejected = [r for r in records if r["event"] == "rejected"]
    assert [r["filename"] for r in uploaded] == [GOOD.name, LOCKED.name]
    assert [(r["filename"], r["code"]) for r in rejected] == [(EMPTY.name, "empty_file")]
    events = [r for r in records if r["event"] == "status"]
    ids = {r["id"] for r in uploaded}
    assert {e["document_id"] for e in events} == ids
    final = {e["document_id"]: e for e in events if e["status"] in ("completed", "failed")}
    assert set(final) == ids
    assert records[-1]["status"] in ("completed", "failed")  # it ends there
    done = next(e for e in final.values() if e["status"] == "completed")
    assert done["analysis"]["analyzer"] == "offline"
    failed = next(e for e in final.values() if e["status"] == "failed")
    assert failed["error"]
    event_ids = [e["event_id"] for e in events]
    assert event_ids == sorted(event_ids)


def test_upload_of_missing_files_needs_no_login(tmp_path: Path) -> None:
    """Nothing to send: each path gets its line and exit 1, before any login or network."""
    missing = [str(tmp_path / "missing.pdf"), str(tmp_path / "none-*.txt"), str(tmp_path)]
    result = cli("upload", *missing, DOCINTEL_URL="http://127.0.0.1:9")  # logged out, no server
    assert result.exit_code == 1, result.output
    assert [line.split("  ")[:2] for line in result.stdout.splitlines()] == [
        ["rejected", path] for path in missing
    ]
    assert result.stderr == ""
    records = json_lines(cli("upload", "--json", missing[0]).stdout)
    assert records == [
        {
            "event": "rejected",
            "path": missing[0],
            "filename": "missing.pdf",
            "code": "not_found",
            "message": "no such file",
        }
    ]


@pytest.fixture
def slow_server(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> ServerProcess:
    """A server taking 2 uploads a minute (Retry-After ~30 s), this test logged in as alice."""
    started: ServerProcess = make_server(
        {"DOCINTEL_UPLOADS_PER_MINUTE": "2", "DOCINTEL_ANALYZER": "offline"}
    )
    monkeypatch.setenv("DOCINTEL_URL", started.url)
    result = cli("login", "--username", "alice", "--password", "alice-pw")
    assert result.exit_code == 0, result.output
    return started


def test_upload_rate_limited_file_is_rejected_and_the_others_carry_on(
    slow_server: ServerProcess,
) -> None:
    third = TXTS / "accents-utf8.txt"
    started = time.monotonic()
    result = cli("upload", "--wait", "--max-wait", "0", str(GOOD), str(NEGATIVE), str(third))
    assert time.monotonic() - started < 30  # it did not wait for the Retry-After
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert [line.split("  ")[:2] for line in lines[:3]] == [
        ["accepted", GOOD.name],
        ["accepted", NEGATIVE.name],
        ["rejected", third.name],
    ]
    assert "Too many uploads" in lines[2]
    # --wait still follows the accepted ones to the end.
    assert sorted(line.split("  ")[:2] for line in lines[3:]) == sorted(
        [["completed", GOOD.name], ["completed", NEGATIVE.name]]
    )
    assert "retrying" not in result.stderr


def test_upload_waits_out_a_rate_limit_and_carries_on(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 60 uploads a minute a token comes back every second: the CLI waits it out."""
    server: ServerProcess = make_server(
        {"DOCINTEL_UPLOADS_PER_MINUTE": "60", "DOCINTEL_ANALYZER": "offline"}
    )
    monkeypatch.setenv("DOCINTEL_URL", server.url)
    assert cli("login", "--username", "alice", "--password", "alice-pw").exit_code == 0
    with server.client() as client:  # use up this minute's burst
        while upload(client, GOOD).status_code != 429:
            pass
    result = cli("upload", str(GOOD), str(NEGATIVE))
    assert result.exit_code == 0, result.output
    assert "rate-limited by the server; retrying in 1 s" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"accepted  {GOOD.name}  ")
    assert lines[1].startswith(f"accepted  {NEGATIVE.name}  ")


# --- watch ----------------------------------------------------------------------------


def test_watch_json_ends_when_documents_are_terminal(server: ServerProcess) -> None:
    with server.client() as client:
        ids = [d["id"] for d in upload(client, GOOD, LOCKED).json()["documents"]]
    result = cli("watch", "--json", *ids)
    assert result.exit_code == 1, result.output  # LOCKED failed
    events = json_lines(result.stdout)
    assert {e["document_id"] for e in events} == set(ids)
    for doc_id in ids:
        statuses = [e["status"] for e in events if e["document_id"] == doc_id]
        assert statuses[0] == "pending" and statuses[-1] in ("completed", "failed")
    # Already terminal: the history replays and it ends at once; exit 0 when all completed.
    result = cli("watch", ids[0])  # stdout is not a terminal: JSON anyway
    assert result.exit_code == 0
    assert json_lines(result.stdout)[-1]["status"] == "completed"


def test_watch_a_deleted_or_unknown_document(server: ServerProcess) -> None:
    result = cli("watch", "--json", "no-such-id")
    assert result.exit_code == 1
    (event,) = json_lines(result.stdout)
    assert event["event"] == "deleted" and event["document_id"] == "no-such-id"


def test_watch_ends_when_a_document_it_follows_is_deleted(make_server: Any) -> None:
    """A deletion writes no event: the quiet stream's next keep-alive (15 s)
    comes with `event: deleted` for it, and watch ends instead of waiting forever."""
    with FakeOpenAI(delay=60) as slow:  # the document stays `analyzing`
        server = make_server(openai_env(slow, DOCINTEL_OPENAI_TIMEOUT="90"))
        token = server.login()
        with server.client() as alice:
            [doc] = upload(alice, ("slow.txt", b"A slow one. It waits.")).json()["documents"]
            wait_status(alice, doc["id"], "analyzing")
            proc = watch_process(server.url, token, "--json", doc["id"][:8])
            assert proc.stdout is not None
            try:
                assert json.loads(proc.stdout.readline())["status"] == "pending"  # it follows
                assert alice.delete(f"/documents/{doc['id']}").status_code == 204
                out, err = proc.communicate(timeout=45)
            finally:
                proc.kill()
    assert proc.returncode == 1, err  # not completed
    last = json_lines(out)[-1]
    assert last["event"] == "deleted" and last["document_id"] == doc["id"]
    assert err == ""


def test_watch_follows_live_events_with_status_filter(server: ServerProcess) -> None:
    """Without ids it follows new events; the stream is read line by line as they come."""
    env = {**os.environ, "DOCINTEL_URL": server.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "docintel", "watch", "--status", "completed"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        uploaded = set()
        # It follows from the moment it connects: upload until it reports one.
        while not select.select([proc.stdout], [], [], 0.5)[0]:
            assert len(uploaded) < 40, "watch printed nothing"
            with server.client() as client:
                (doc,) = upload(client, NEGATIVE).json()["documents"]
            uploaded.add(doc["id"])
        event = json.loads(proc.stdout.readline())  # flushed as it arrives, not at exit
        assert event["document_id"] in uploaded and event["status"] == "completed"
        assert event["analysis"]["sentiment"] == "negative"
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert b"Traceback" not in stderr


def test_watch_waits_out_the_servers_stream_cap(make_server: Any) -> None:
    """Over the per-user stream cap, watch says the server is busy and keeps trying."""
    server = make_server({"DOCINTEL_ANALYZER": "offline", "DOCINTEL_MAX_STREAMS_PER_USER": "1"})
    token = server.login()
    held = httpx.stream(
        "GET", server.url + "/documents/stream", params={"access_token": token}, timeout=30
    )
    other = held.__enter__()  # alice's one stream
    assert other.status_code == 200
    proc = watch_process(server.url, token, "--json", "--since", "0")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        note = proc.stderr.readline()
        assert "busy" in note and "event streams open" in note, note
        held.__exit__(None, None, None)  # a place frees: watch gets in
        with server.client() as client:
            (doc,) = upload(client, NEGATIVE).json()["documents"]
        seen = [json.loads(proc.stdout.readline()) for _ in range(4)]
        assert [e["document_id"] for e in seen] == [doc["id"]] * 4
    finally:
        held.__exit__(None, None, None)
        proc.send_signal(2)
        proc.communicate(timeout=10)
    assert proc.returncode == 130


def _last_event_id(server: ServerProcess, token: str) -> int:
    from tests.conftest import read_events

    events = read_events(server, token, params={"last_event_id": 0}, until=lambda e: len(e) >= 4)
    return max(e["id"] for e in events)


def test_watch_reconnects_with_last_event_id(make_server: Any) -> None:
    """The server dies and comes back; what happened meanwhile is replayed, once."""
    first = make_server()
    token = first.login()

    def api(server: ServerProcess) -> httpx.Client:
        return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})

    with api(first) as c:
        (one,) = upload(c, GOOD).json()["documents"]
        wait_terminal(c, [one["id"]])
    since = _last_event_id(first, token)  # --since: no race with the first connection
    with Relay(first.port) as relay:
        proc = watch_process(relay.url, token, "--json", "--since", str(since))
        assert proc.stdout is not None
        try:
            with api(first) as c:
                (two,) = upload(c, NEGATIVE).json()["documents"]
            seen = [json.loads(proc.stdout.readline()) for _ in range(4)]
            assert seen[-1]["status"] == "completed"
            first.kill()  # the stream drops; watch retries against a dead backend
            second = make_server(data_dir=first.data_dir)
            with api(second) as c:  # while watch cannot reach it
                (three,) = upload(c, NEGATIVE).json()["documents"]
                wait_terminal(c, [three["id"]])
            relay.port = second.port  # back: watch must replay three's events
            seen += [json.loads(proc.stdout.readline()) for _ in range(4)]
        finally:
            proc.send_signal(2)
            _, stderr = proc.communicate(timeout=10)
    assert [e["document_id"] for e in seen] == [two["id"]] * 4 + [three["id"]] * 4
    assert [e["status"] for e in seen[4:]] == ["pending", "processing", "analyzing", "completed"]
    ids = [e["event_id"] for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == 8
    assert "reconnecting" in stderr
    assert proc.returncode == 130


def _run_in_pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run a command on a pseudo-terminal; returns (exit status, everything it drew)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child
        os.execve(sys.executable, [sys.executable, "-m", "docintel", *args], env)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
        else:
            os.kill(pid, 9)
            raise AssertionError("timed out: " + b"".join(chunks).decode(errors="replace"))
    finally:
        _, wait_status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(wait_status), b"".join(chunks).decode(errors="replace")


def test_watch_on_a_terminal_draws_a_live_table(server: ServerProcess) -> None:
    with server.client() as client:
        ids = [d["id"] for d in upload(client, GOOD, NEGATIVE).json()["documents"]]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(COLUMNS="120", LINES="30", TERM="xterm-256color", DOCINTEL_URL=server.url)
    code, screen = _run_in_pty(["watch", *ids], env)
    assert code == 0, screen
    assert "\x1b[" in screen  # colour and cursor movement: a live display
    assert "QUEUED" in screen and "EXTRACT" in screen and "ANALYSE" in screen
    last_frame = screen.rsplit("QUEUED", 1)[1]
    assert last_frame.count("completed") == 2
    assert GOOD.name in last_frame and NEGATIVE.name in last_frame
    assert "{" not in last_frame  # not JSON


# --- list / show / status / delete ---------------------------------------------------------


def test_list_show_status_delete(server: ServerProcess) -> None:
    with server.client() as client:
        docs = upload(client, GOOD, LOCKED).json()["documents"]
        wait_terminal(client, [d["id"] for d in docs])
    good, locked = (d["id"] for d in docs)

    listed = cli("list", "--json")
    assert listed.exit_code == 0
    page = json.loads(listed.stdout)
    assert {good, locked} <= {d["id"] for d in page["items"]}

    plain = cli("list", "--status", "failed", "--limit", "5")
    assert plain.exit_code == 0
    rows = [line.split("\t") for line in plain.stdout.splitlines()]
    assert all(row[2] == "failed" for row in rows)
    assert [locked, LOCKED.name, "failed"] in [row[:3] for row in rows]
    assert "\x1b" not in plain.stdout

    shown = cli("show", good)
    assert shown.exit_code == 0
    for heading in ("Timeline", "Summary", "Topics", "Sentiment", "Action items"):
        assert heading in shown.stdout
    for status in ("pending", "processing", "analyzing", "completed"):
        assert status in shown.stdout
    detail = json.loads(cli("show", "--json", good).stdout)
    assert detail["analysis"]["summary"] and detail["history"][0]["status"] == "pending"
    failed = cli("show", locked)
    assert "Error:" in failed.stdout and "password" in failed.stdout

    status = cli("status", good)
    assert status.exit_code == 0 and status.stdout.startswith(f"{good}  completed")
    assert json.loads(cli("status", "--json", locked).stdout)["status"] == "failed"
    assert cli("status", locked).exit_code == 1

    refused = cli("delete", good, input="n\n")
    assert refused.exit_code == 1
    assert cli("status", good).exit_code == 0
    deleted = cli("delete", good, input="y\n")
    assert deleted.exit_code == 0 and f"deleted {good}" in deleted.stdout
    removed = cli("delete", "--yes", "--json", locked)
    assert json_lines(removed.stdout) == [{"id": locked, "deleted": True}]
    for doc_id in (good, locked):
        gone = cli("show", doc_id)
        assert gone.exit_code == 1 and gone.stderr.startswith("docintel: ")
    assert cli("delete", "--yes", good).exit_code == 1


def test_users_see_only_their_documents(server: ServerProcess) -> None:
    with server.client("bob") as client:
        (doc,) = upload(client, GOOD).json()["documents"]
    assert cli("show", doc["id"]).exit_code == 1
    assert doc["id"] not in cli("list").stdout


# --- analyze -------------------------------------------------------------------------


def test_analyze_runs_without_a_server(tmp_path: Path) -> None:
    data_dir = Path(os.environ["DOCINTEL_DATA_DIR"])
    result = cli(
        "analyze",
        "--json",
        str(GOOD),
        str(NEGATIVE),
        str(EMPTY),
        str(LOCKED),
        DOCINTEL_URL="http://127.0.0.1:9",
    )
    assert result.exit_code == 1, result.output
    records = {r["filename"]: r for r in json_lines(result.stdout)}
    assert records[GOOD.name]["analysis"]["analyzer"] == "offline"
    assert records[NEGATIVE.name]["analysis"]["sentiment"] == "negative"
    assert records[EMPTY.name]["error"]["code"] == "empty_file"
    assert "password" in records[LOCKED.name]["error"]["message"]
    assert not data_dir.exists()  # no database, no uploads left behind

    ok = cli("analyze", str(REPO / "examples" / "*.txt"), "--analyzer", "offline")
    assert ok.exit_code == 0, ok.output
    assert "Summary" in ok.stdout and "Action items" in ok.stdout


HOSTILE_NAME = "\x1b]0;pwned\x07\x1b[2Jevil\tname\u202egnp.txt"


def test_control_characters_from_the_server_are_shown_not_obeyed(server: ServerProcess) -> None:
    """A file name that would set the title, clear the screen or forge a row."""
    # A raw multipart body: httpx would percent-encode the tab and the bell.
    body = (
        '--b\r\nContent-Disposition: form-data; name="files"; '
        f'filename="{HOSTILE_NAME}"\r\nContent-Type: text/plain\r\n\r\n'
        "A hostile name. Harmless text.\r\n--b--\r\n"
    ).encode()
    with server.client() as alice:
        answer = alice.post(
            "/documents/upload", content=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )  # fmt: skip
        [doc] = answer.json()["documents"]
        assert doc["filename"] == HOSTILE_NAME  # kept as sent; only its display is escaped
        wait_terminal(alice, [doc["id"]])
    listed = cli("list")
    assert listed.exit_code == 0
    shown = [line for line in listed.stdout.splitlines() if doc["id"] in line]
    assert len(shown) == 1 and len(shown[0].split("\t")) == 5  # no forged field or row
    assert "\\x1b]0;pwned\\x07\\x1b[2Jevil\\tname\\u202egnp.txt" in shown[0]
    for command in (["list"], ["show", doc["id"]], ["status", doc["id"]], ["watch", doc["id"]]):
        out = cli(*command)
        for raw in ("\x1b", "\x07", "\u202e"):
            assert raw not in out.stdout + out.stderr, (command, raw)
    # Machine output keeps the real name: JSON escapes it by itself.
    assert json.loads(cli("show", doc["id"], "--json").stdout)["filename"] == HOSTILE_NAME
