"""`docintel upload`."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from docintel.cli import render
from docintel.cli.commands._common import JsonOption, client, handles_errors
from docintel.cli.commands.watch import follow


def expand(patterns: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Paths and globs → files (in order, once each), and (argument, problem) pairs."""
    found: dict[Path, None] = {}
    problems: list[tuple[str, str]] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_file():
            found.setdefault(path, None)
        elif path.is_dir():
            problems.append((pattern, "is a folder (use a glob such as folder/*.pdf)"))
        elif glob.has_magic(pattern):
            matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
            files = [m for m in matches if m.is_file()]
            if not files:
                problems.append((pattern, "no file matches"))
            for m in files:
                found.setdefault(m, None)
        else:
            problems.append((pattern, "no such file"))
    return list(found), problems


@handles_errors
def upload(
    files: Annotated[list[str], typer.Argument(metavar="FILES...", help="Paths or globs.")],
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Follow each document until it ends.")
    ] = False,
    json_: JsonOption = False,
) -> None:
    """Upload PDF and TXT files; one line per file with its id or why it was rejected.

    Exit 0 only when every file was accepted (and, with --wait, completed).

    Example: docintel upload --wait reports/*.pdf notes.txt
    """
    paths, problems = expand(files)
    ok = not problems
    for pattern, problem in problems:
        if json_:
            render.json_line({"event": "rejected", "path": pattern, "filename": Path(pattern).name,
                              "code": "not_found", "message": problem})
        else:
            render.line(f"[red]rejected[/]  {render.escape(pattern)}  {render.escape(problem)}")
    accepted: list[dict[str, Any]] = []
    interactive = render.out().is_terminal and render.err().is_terminal
    with client() as api:
        progress = Progress(
            TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(),
            TransferSpeedColumn(), console=render.err(), transient=True,
            disable=json_ or not interactive,
        )
        with progress:
            for path in paths:
                try:
                    task = progress.add_task(path.name, total=path.stat().st_size)
                    result = api.upload(path, lambda n, task=task: progress.advance(task, n))
                    progress.remove_task(task)
                except OSError as exc:  # unreadable here: the server never saw it
                    result = {"documents": [], "errors": [
                        {"filename": path.name, "code": "unreadable_file",
                         "message": exc.strerror or str(exc)}]}
                for doc in result["documents"]:
                    accepted.append(doc)
                    if json_:
                        render.json_line({"event": "uploaded", "path": str(path), **doc})
                    else:
                        render.line(f"[green]accepted[/]  {render.escape(doc['filename'])}  "
                                    f"{doc['id']}")
                for rejection in result["errors"]:
                    ok = False
                    if json_:
                        render.json_line({"event": "rejected", "path": str(path), **rejection})
                    else:
                        render.line(f"[red]rejected[/]  {render.escape(rejection['filename'])}  "
                                    f"{render.escape(rejection['message'])}")
        if wait and accepted:
            board = render.Board()
            for doc in accepted:
                board.seed(doc)
            live = not json_ and render.out().is_terminal
            follow(api, board, [d["id"] for d in accepted], after=0, json_=json_, live=live,
                   lines=not json_ and not live)
            if live:
                for doc in accepted:
                    render.out().print(render.outcome_line(board.rows[doc["id"]]), soft_wrap=True)
            ok = ok and all(board.rows[d["id"]].status == "completed" for d in accepted)
    if not ok:
        raise typer.Exit(1)
