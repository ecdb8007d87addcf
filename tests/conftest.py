"""Shared fixtures: isolated user dirs, the corpus, live servers, the fake LLM.

Servers run as real `python -m docintel serve` subprocesses on a free port, so
tests see exactly what a user sees (and can SIGKILL them). The fake OpenAI
server runs in this process; the server under test reaches it over HTTP with
the official SDK.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fake_openai import FakeOpenAI

# PostgreSQL fixtures (postgres, postgres_url): tests/pg.py.
pytest_plugins = ["tests.pg"]

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data"  # the sample files, with their licences (tests/data/README.md)
PDFS = CORPUS / "pdf"
TXTS = CORPUS / "txt"
TERMINAL = ("completed", "failed")


# --- no process outlives the suite ---------------------------------------------
#
# The test process becomes a "child subreaper": a process orphaned by anything
# the tests start (a server killed with SIGKILL leaving its parser behind) is
# re-parented to us rather than to PID 1, so at the end every survivor is one
# of our children, and the run fails if any is still alive.

PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config: pytest.Config) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    deadline = time.monotonic() + 5  # a child that was just told to stop may still be exiting
    while (survivors := live_children(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while True:  # reap: orphans re-parented to us end as our zombies
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    if survivors:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = [f"  {pid}: {cmdline}" for pid, cmdline in survivors.items()]
        message = "processes started by the tests were still running at the end:\n"
        if reporter is not None:
            reporter.write_line(message + "\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a live process, None if it is gone (Linux /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]  # the name may hold spaces and ')'
    return None if state in ("Z", "X") else (state, int(ppid))


def live_children(parent: int) -> dict[int, str]:
    """Live (not zombie) children of `parent`: pid → command line."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        state = process_state(int(entry.name))
        if state is None or state[1] != parent:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        found[int(entry.name)] = cmdline.strip()
    return found


def descendants(root: int) -> dict[int, str]:
    """Every live process below `root`: pid → command line."""
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        children = live_children(frontier.pop())
        found.update(children)
        frontier.extend(children)
    return found


@pytest.fixture(autouse=True)
def isolated_user_dirs(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test touches the real data or config dir, or a real API key."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("DOCINTEL_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("DOCINTEL_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("NO_COLOR", "1")
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "DOCINTEL_TOKEN",
        "DOCINTEL_URL",
        "DOCINTEL_USERS",
        "DOCINTEL_ANALYZER",
        "DOCINTEL_JWT_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`docintel serve` in a subprocess, on a data dir that outlives restarts."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        self.data_dir = data_dir
        # (soft, hard) RLIMIT_NOFILE for the server: it raises soft to hard at
        # start, so only a lower hard limit shows how it fits inside one.
        self.open_files = open_files
        self.extra_env = env or {}
        self.extra_args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start (or restart, on the same port so clients carry on)."""
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "DOCINTEL_USERS": "alice:alice-pw,bob:bob-pw",
            "DOCINTEL_JWT_SECRET": "test-secret-that-is-at-least-32-bytes-long",
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "docintel",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    *self.extra_args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._lower_open_files if self.open_files else None,
            )
        # Only uvicorn's own line proves that *this* process bound the port: a
        # free port can be taken by another process before the server binds
        # it, and that process may answer /healthz too.
        bound = f"Uvicorn running on http://127.0.0.1:{self.port}"
        already = self.log().count(bound)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            if self.log().count(bound) > already:
                try:
                    if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def _lower_open_files(self) -> None:
        import resource

        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def rss_kb(self) -> int:
        """The server process's resident memory (Linux /proc)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def login(self, username: str = "alice", password: str | None = None) -> str:
        response = httpx.post(
            self.url + "/auth/login",
            json={"username": username, "password": password or f"{username}-pw"},
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def client(self, username: str = "alice") -> httpx.Client:
        token = self.login(username)
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )


def upload(client: httpx.Client, *paths: Path | tuple[str, bytes]) -> httpx.Response:
    files = []
    for item in paths:
        if isinstance(item, tuple):
            files.append(("files", item))
        else:
            files.append(("files", (item.name, item.read_bytes())))
    return client.post("/documents/upload", files=files)


def wait_terminal(client: httpx.Client, ids: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Poll until every document is completed or failed; returns id → detail."""
    deadline = time.monotonic() + timeout
    details: dict[str, Any] = {}
    while time.monotonic() < deadline:
        details = {i: client.get(f"/documents/{i}").json() for i in ids}
        if all(d.get("status") in TERMINAL for d in details.values()):
            return details
        time.sleep(0.1)
    raise AssertionError(
        f"not terminal after {timeout}s: { {i: d.get('status') for i, d in details.items()} }"
    )


def wait_status(client: httpx.Client, document_id: str, status: str, timeout: float = 30.0) -> None:
    """Poll until the document has `status` (e.g. to kill the server mid-stage)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = client.get(f"/documents/{document_id}/status").json()["status"]
        if seen == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"{document_id} never reached {status!r} (last seen {seen!r})")


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def openai_env(fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-test-key-never-logged",
        "OPENAI_BASE_URL": fake.base_url,
        "DOCINTEL_OPENAI_TIMEOUT": "3",
        **extra,
    }


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    """Factory: make_server(env=..., data_dir=...) → a started ServerProcess; all stopped after."""
    started: list[ServerProcess] = []

    def make(
        env: dict[str, str] | None = None,
        data_dir: Path | None = None,
        args: list[str] | None = None,
        open_files: tuple[int, int] | None = None,
    ) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", env, args, open_files).start()
        started.append(server)
        return server

    yield make
    for server in started:
        if server.proc and server.proc.poll() is None:
            server.kill()


@pytest.fixture(scope="module")
def llm_server(
    tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeOpenAI
) -> Iterator[ServerProcess]:
    """One server per test module, analysing with the fake OpenAI server."""
    data = tmp_path_factory.mktemp("shared") / "data"
    os.environ.pop("DOCINTEL_DATA_DIR", None)
    server = ServerProcess(data, openai_env(fake_llm)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def offline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module with the default (offline) analyzer."""
    data = tmp_path_factory.mktemp("offline") / "data"
    server = ServerProcess(data, {"DOCINTEL_ANALYZER": "offline"}).start()
    yield server
    server.stop()


def read_events(
    server: ServerProcess,
    token: str,
    *,
    params: dict[str, Any] | list[tuple[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    until: Any = None,
    timeout: float = 60.0,
) -> list[dict[str, Any]]:
    """Read SSE events (id, event, data) from /documents/stream until `until(events)` is true."""
    from httpx_sse import connect_sse

    events: list[dict[str, Any]] = []
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(timeout, read=timeout)) as client:
        with connect_sse(
            client,
            "GET",
            "/documents/stream",
            params=params,
            headers={"Authorization": f"Bearer {token}", **(headers or {})},
        ) as source:
            source.response.raise_for_status()
            for sse in source.iter_sse():
                if not sse.data:
                    continue  # keep-alive
                events.append({"id": int(sse.id), "event": sse.event, "data": sse.json()})
                if until is not None and until(events):
                    break
    return events


def open_streams(server: ServerProcess) -> int:
    """The server's open event streams (SSE and WebSocket), as /healthz counts them."""
    count: int = httpx.get(server.url + "/healthz").json()["streams"]
    return count


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Until `condition()` holds (True), or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def terminal_for(ids: list[str]) -> Any:
    """An `until` for read_events: every one of `ids` has a terminal event."""

    def done(events: list[dict[str, Any]]) -> bool:
        ended = {e["data"]["document_id"] for e in events if e["data"]["status"] in TERMINAL}
        return set(ids) <= ended

    return done


# --- a small tmpfs for the disk-full cases (test_upload_exhaustion, test_exhaustion) ---


@pytest.fixture
def tmpfs_upload_dir(tmp_path: Path) -> Iterator[Any]:
    """Factory: tmpfs_upload_dir(size="8m", nr_inodes=None) → a fresh tmpfs mounted
    under tmp_path, to serve as a data dir that fills up; unmounted after the test.

    Mounting needs root (or CAP_SYS_ADMIN), as here and in CI; elsewhere the
    test is skipped, saying why. Ask for it before make_server, so that the
    servers are stopped before the unmount.
    """
    mounted: list[Path] = []

    def mount(size: str = "8m", nr_inodes: int | None = None) -> Path:
        target = tmp_path / f"tmpfs-{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                capture_output=True,
                text=True,
            )
        except FileNotFoundError:
            pytest.skip("no `mount` command here: cannot make a small tmpfs to fill")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)  # still busy


@pytest.fixture
def small_tmpfs(tmpfs_upload_dir: Any) -> Path:
    """A 24 MB tmpfs for the test (root only), unmounted after it.

    Request it before `make_server` so the servers on it are stopped first.
    """
    mount: Path = tmpfs_upload_dir("24m")
    return mount


# --- a real browser: Debian's Chromium, driven by Playwright ------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Playwright's own browser download cannot work on these machines; CI installs
# Debian's package (.ci/run), so these tests skip only where it is missing.
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's Browser), closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()
