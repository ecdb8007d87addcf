"""Help pages and usage errors, as a user sees them (issue 7, point 9).

Help names values (`--port PORT`), never Python types (`<int>`, `<bool>`,
`<list[str]>`), and usage lines read `FILES...`, `ID`, `[ID...]`, never
`[[ID...]]...`. A usage error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from docintel.cli.main import app
from tests.conftest import REPO

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
# The installed console script, so the program name is the one users type.
DOCINTEL = Path(sys.executable).with_name("docintel")

TYPE_METAVAR = re.compile(r"<[a-z][\w\[\], |.-]*>")  # <bool>, <list[str]>, <int range>…
DOUBLED = re.compile(r"\[\[|\]\]|\]\.\.\.|\}\.\.\.|\{")  # [[ID...]]...  {FILES...}...
ONE_LINE = re.compile(r"^docintel: .+ \(see 'docintel( [a-z-]+)? --help'\)$")


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "80"}, prog_name="docintel")


def run(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    """The real `docintel`, as a shell runs it: stdout and stderr apart."""
    return subprocess.run(
        [str(DOCINTEL), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": str(columns)},
    )


def test_the_console_script_is_installed() -> None:
    assert DOCINTEL.exists(), "install the package (pip install -e .) to get `docintel`"
    assert "serve" in COMMANDS and "upload" in COMMANDS


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_no_python_types_and_no_doubled_brackets(command: str) -> None:
    result = cli(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    page = result.stdout
    assert page.startswith(f"Usage: docintel {command}".replace("  ", " "))
    assert not TYPE_METAVAR.search(page), TYPE_METAVAR.search(page)
    assert not DOUBLED.search(page), DOUBLED.search(page)
    assert "╭" not in page and "│" not in page  # plain text, no boxes
    assert max(len(line) for line in page.splitlines()) <= 80


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("upload", "Usage: docintel upload [OPTIONS] FILES..."),
        ("analyze", "Usage: docintel analyze [OPTIONS] FILES..."),
        ("watch", "Usage: docintel watch [OPTIONS] [ID...]"),
        ("show", "Usage: docintel show [OPTIONS] ID"),
        ("delete", "Usage: docintel delete [OPTIONS] ID..."),
        ("list", "Usage: docintel list [OPTIONS]"),
    ],
)
def test_usage_lines_read_like_the_readme(command: str, usage: str) -> None:
    assert cli(command, "--help").stdout.splitlines()[0] == usage


def test_options_name_their_values_and_flags_show_none() -> None:
    serve = cli("serve", "--help").stdout
    assert re.search(r"--port PORT\s", serve)
    assert re.search(r"--data-dir DATA_DIR\s", serve)
    analyze = cli("analyze", "--help").stdout
    assert "--analyzer [offline|openai]" in analyze
    upload = cli("upload", "--help").stdout
    assert re.search(r"-w, --wait\s+Follow", upload)  # a flag: nothing after it
    assert re.search(r"--max-wait SECONDS\s", upload)


def test_examples_stay_whole_on_their_own_line() -> None:
    # Rewrapped at 80 columns, this example used to break inside the jq program.
    page = cli("watch", "--help").stdout
    assert "\n    docintel watch --json | jq -r 'select(.status==\"failed\") | .filename'\n" in page


def test_the_command_list_keeps_summaries_whole() -> None:
    page = cli("--help").stdout
    assert "..." not in page.split("Commands:")[1]
    assert "Documents:" in page  # the sections of the old help panels


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_one_line_on_stderr_and_exit_2(command: str) -> None:
    result = cli(command, "--bogus")
    assert result.exit_code == 2
    assert result.stdout == ""
    # Click may add a guess, "(Possible options: --host)", on the same line.
    assert re.fullmatch(
        rf"docintel: no such option: --bogus( \(Possible options: [^)]+\))? "
        rf"\(see 'docintel {command} --help'\)\n",
        result.stderr,
    ), result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["list", "--bogus"], "no such option: --bogus"),
        (["list", "--jsn"], "no such option: --jsn (Possible options: --json)"),
        (["--bogus"], "no such option: --bogus"),
        (["frobnicate"], "no such command 'frobnicate'"),
        (["lst"], "no such command 'lst'. Did you mean 'list'?"),
        (["show"], "missing argument 'ID'"),
        (["upload"], "missing argument 'FILES'"),
        (["show", "a", "b"], "got unexpected extra argument(s) (b)"),
        (["list", "-n"], "option '-n' requires an argument"),
        (["list", "--limit", "abc"], "invalid value for '--limit' / '-n': 'abc' should be"),
        (
            ["list", "--limit", "0"],
            "invalid value for '--limit' / '-n': '0' should be from 1 to 500",
        ),
        (["list", "--status", "done"], "invalid value for '--status': 'done' is not one of"),
        (["watch", "--since", "-1"], "invalid value for '--since': '-1' should be at least 0"),
        (["serve", "--port", "x"], "invalid value for '--port': 'x' should be a valid integer"),
        # What was typed, quoted as typed, whatever number it parses to.
        (["list", "-n", "1_000"], "invalid value for '--limit' / '-n': '1_000' should be from 1"),
        (["list", "-n", "it's"], "invalid value for '--limit' / '-n': \"it's\" should be a valid"),
        (
            ["upload", "--max-wait", "-1", "f"],
            "invalid value for '--max-wait': '-1' should be at least",
        ),
        (["upload", "--max-wait", "nan", "f"], "invalid value for '--max-wait': 'nan' should be a"),
        (["serve", "--port", "99999"], "invalid value for '--port': '99999' should be from 0 to"),
        (["analyze", "--analyzer", "x", "f.txt"], "invalid value for '--analyzer': 'x' is not"),
    ],
)
def test_usage_errors_are_one_line_on_stderr_with_exit_2(args: list[str], message: str) -> None:
    result = run(*args, columns=40)  # a narrow terminal must not wrap it either
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert ONE_LINE.match(lines[0]), lines[0]
    assert lines[0].startswith(f"docintel: {message}"), lines[0]
    command = args[0] if not args[0].startswith("-") and "such command" not in message else ""
    assert lines[0].endswith(f"(see '{' '.join(['docintel', command]).strip()} --help')")


def test_a_port_out_of_range_in_the_environment_is_one_line_too(tmp_path: Path) -> None:
    env = {**os.environ, "DOCINTEL_PORT": "70000", "DOCINTEL_DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [str(DOCINTEL), "serve"], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2
    assert result.stderr == "docintel: DOCINTEL_PORT must be from 0 to 65535.\n"


def test_a_real_run_prints_help_on_stdout() -> None:
    result = run("upload", "--help")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("Usage: docintel upload [OPTIONS] FILES...\n")
    assert not TYPE_METAVAR.search(result.stdout)


def readme_runs() -> list[pytest.ParameterSet]:
    """`$ docintel ...` examples in the README's console blocks that need no
    server (help pages, usage errors), with the output shown under them."""
    text = (REPO / "README.md").read_text()
    runs: list[pytest.ParameterSet] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        for command, output in re.findall(r"^\$ docintel(.*)\n((?:(?!\$ ).*\n)*)", block, re.M):
            shown = output.rstrip("\n")
            if "--help" in command or ONE_LINE.match(shown):
                runs.append(pytest.param(command.strip(), shown, id=command.strip()))
    return runs


@pytest.mark.parametrize(("command", "shown"), readme_runs())
def test_the_readme_shows_what_users_see(command: str, shown: str) -> None:
    """If this fails after a change to the CLI, paste the real output into the README."""
    result = run(*shlex.split(command))
    assert (result.stdout + result.stderr).rstrip("\n") == shown


def test_the_readme_has_help_and_error_examples() -> None:
    commands = [str(run.values[0]) for run in readme_runs()]
    assert any("--help" in c for c in commands) and len(commands) >= 4


def test_docintel_alone_prints_the_help() -> None:
    result = run()
    assert result.returncode == 2  # no command: a usage error, with the help to fix it
    assert result.stderr.startswith("Usage: docintel [OPTIONS] COMMAND [ARGS...]")
