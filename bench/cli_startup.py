"""How fast does the CLI start? `docintel --version`, `--help` and `list --json`.

Baseline: `python -c pass` with the same interpreter, measured in the same run,
interleaved with the commands (one run of each in turn), so that a busy
machine slows all of them alike. `list --json` talks to a live server that the
CLI logged in to (`DOCINTEL_CONFIG_DIR` in a temp dir), with a few documents
in it. Bytecode is cached, as in an install. Prints the median wall time of N
runs, the median CPU time (user + system: less shaken by other processes on
a shared machine), and each command's difference from and ratio to the
baseline.

    python -m bench cli_startup [--tiny]
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import start_server
from tests.conftest import TXTS, upload, wait_terminal

LIBRARIES = (
    "import ssl, typer, docintel.cli.client, httpx, httpx_sse; "
    "httpx.Client(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))"
)
# Typer alone, parsing options of the kinds `list` has. (Typer 0.29 built a
# Pydantic validator for each option it parsed, importing Pydantic: +150-200 ms;
# pyproject.toml keeps Typer below 0.29 for that.)
TYPER_APP = """
import sys
from typing import Annotated
import typer
app = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
@app.command("list")
def list_(
    status: Annotated[list[str] | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500)] = 50,
    url: Annotated[str | None, typer.Option("--url")] = None,
    json_: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    SEND
@app.command()
def other() -> None:
    pass
sys.argv = ["docintel", "list", "--json"]
app()
"""
TYPER_PARSING = TYPER_APP.replace("SEND", "pass")
# The same app sending `list`'s request with the standard library's http.client
# instead of httpx (which imports ~100 modules): what `list --json` would cost if
# the request/response commands did not use httpx. Reads the stored login.
TYPER_HTTP_CLIENT = TYPER_APP.replace(
    "SEND",
    """import http.client, json, os, urllib.parse
    login = json.load(open(os.path.join(os.environ["DOCINTEL_CONFIG_DIR"], "login.json")))
    url = login["default"]
    server = login["logins"][url]
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    auth = {"Authorization": "Bearer " + server["token"]}
    conn.request("GET", "/documents?limit=50", headers=auth)
    response = conn.getresponse()
    assert response.status == 200, response.status
    print(json.dumps(json.loads(response.read()), indent=2))""",
)


def _docintel() -> list[str]:
    """The installed console script, as users run it (else `python -m docintel`)."""
    script = Path(sys.executable).with_name("docintel")
    return [str(script)] if script.exists() else [sys.executable, "-m", "docintel"]


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) of one run, in milliseconds; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def main(tiny: bool = False) -> None:
    runs = 5 if tiny else 30
    config = Path(tempfile.mkdtemp(prefix="docintel-bench-cli-"))
    # As installed: pip writes the bytecode cache at install time. Under
    # PYTHONDONTWRITEBYTECODE=1 (set on this machine) an editable checkout would
    # compile docintel's own modules from source on every run instead.
    dropped = ("DOCINTEL_URL", "DOCINTEL_TOKEN", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env.update(DOCINTEL_CONFIG_DIR=str(config), NO_COLOR="1", COLUMNS="80")
    docintel = _docintel()
    server = start_server({})
    try:
        with server.client() as alice:
            files = sorted(TXTS.glob("*.txt"))[:3]
            ids = [d["id"] for d in upload(alice, *files).json()["documents"]]
            wait_terminal(alice, ids)
        _run([*docintel, "login", "--url", server.url, "-u", "alice", "-p", "alice-pw"], env)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "docintel --version": [*docintel, "--version"],
            "docintel --help": [*docintel, "--help"],
            "docintel list --json": [*docintel, "list", "--json"],
            # What list --json cannot go below while it uses Typer and httpx: import
            # both and make the client as the CLI does (docintel/cli/__init__.py stubs
            # httpx._main).
            "libraries alone": [sys.executable, "-c", LIBRARIES],
            "Typer parsing alone": [sys.executable, "-c", TYPER_PARSING],  # see TYPER_APP
            "Typer + http.client": [sys.executable, "-c", TYPER_HTTP_CLIENT],
        }
        for argv in commands.values():  # warm the file and bytecode caches; not counted
            _run(argv, env)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, argv in commands.items():
                wall, cpu = _run(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
    finally:
        server.stop()
        shutil.rmtree(config, ignore_errors=True)
    base_wall = statistics.median(walls["python -c pass"])
    base_cpu = statistics.median(cpus["python -c pass"])
    print(f"{runs} runs each, interleaved; medians in ms; `{' '.join(docintel)}`; bytecode cached")
    print(f"{'command':22s} {'wall':>7s} {'- base':>7s} {'ratio':>6s}   {'cpu':>7s} {'- base':>7s}")
    for name in commands:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(
            f"{name:22s} {wall:7.1f} {wall - base_wall:7.1f} {wall / base_wall:5.1f}x"
            f"   {cpu:7.1f} {cpu - base_cpu:7.1f}"
        )
    print("targets (issue 8): --version <= 60 ms and list --json <= 120 ms above the baseline")
