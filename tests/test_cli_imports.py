"""The CLI imports nothing of the server or the database (issue 8, point 1).

Each check runs the CLI in a fresh interpreter and looks at `sys.modules`
afterwards: what a command imports is behaviour (a client that drags in
peewee, FastAPI and the analysis core starts in a quarter of a second, not in
a few tens of milliseconds). Timings are measured by `bench/cli_startup.py`,
never asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

#: Never imported by the CLI's client side: the server, the database, the ORM.
SERVER_SIDE = (
    "peewee",
    "fastapi",
    "uvicorn",
    "docintel.core.models",
    "docintel.core.db",
    "docintel.server",
)
#: Not imported either where no command needs them: the analysis core.
HEAVY = ("docintel.core.analysis", "docintel.core.pipeline")

RUN = """
import json, sys
args, record = json.loads(sys.argv[1]), sys.argv[2]
import docintel.cli.main
if args is not None:
    sys.argv = ["docintel", *args]
    try:
        docintel.cli.main.main()
    except SystemExit:
        pass
with open(record, "w") as out:
    json.dump(sorted(m for m, module in sys.modules.items() if module is not None), out)
"""


def modules_after(args: list[str] | None, tmp_path: Path) -> set[str]:
    """The modules loaded after importing the entry point (and running `args`)."""
    record = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", RUN, json.dumps(args), str(record)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(record.read_text()))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_importing_the_entry_point_imports_no_server_and_no_database(tmp_path: Path) -> None:
    modules = modules_after(None, tmp_path)
    assert loaded(modules, SERVER_SIDE + HEAVY) == []
    # Nor Typer: `docintel --version` is answered before it is needed.
    assert loaded(modules, ("typer", "httpx", "rich")) == []


@pytest.mark.parametrize("args", [["--version"], ["--help"], []])
def test_version_and_help_import_no_server_and_no_database(args: list[str], tmp_path: Path) -> None:
    modules = modules_after(args, tmp_path)
    assert loaded(modules, SERVER_SIDE + HEAVY) == []
    assert loaded(modules, ("httpx", "rich")) == []  # the client and the tables wait too
    assert loaded(modules, ("asyncio",)) == []  # only `analyze` runs an event loop


def test_version_is_answered_before_typer_is_imported(tmp_path: Path) -> None:
    assert loaded(modules_after(["--version"], tmp_path), ("typer",)) == []


@pytest.mark.parametrize(
    "command", ["serve", "login", "upload", "watch", "list", "show", "delete", "analyze"]
)
def test_a_command_s_help_imports_no_server_and_no_database(command: str, tmp_path: Path) -> None:
    modules = modules_after([command, "--help"], tmp_path)
    assert loaded(modules, SERVER_SIDE + HEAVY) == []


def test_a_client_command_imports_no_server_no_database_and_no_analysis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A free port on loopback: nothing answers, the command fails with exit 3.
    monkeypatch.setenv("DOCINTEL_TOKEN", "a-token")
    modules = modules_after(["list", "--json", "--url", f"127.0.0.1:{free_port()}"], tmp_path)
    assert "docintel.cli.client" in modules and "httpx" in modules
    assert loaded(modules, SERVER_SIDE + HEAVY) == []
    # Nor what only slowed every command's start (bench cli_startup): Pydantic
    # (Typer 0.29 parsed options with it) and httpx's own command-line tool
    # (imported by httpx whenever Click, Rich and Pygments are installed).
    assert loaded(modules, ("pydantic", "httpx._main", "click", "pygments")) == []


def test_a_usage_error_imports_no_pydantic(tmp_path: Path) -> None:
    modules = modules_after(["list", "--limit", "abc"], tmp_path)
    assert loaded(modules, ("pydantic",)) == []
