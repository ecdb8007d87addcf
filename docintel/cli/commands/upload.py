"""`docintel upload`."""

from __future__ import annotations

import glob
import math
from pathlib import Path
from time import sleep
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
from docintel.cli.client import Client, RateLimited
from docintel.cli.commands._common import JsonOption, UrlOption, client, handles_errors
from docintel.cli.commands.watch import follow

#: After a 429, each file is sent again at most this many times…
MAX_RETRIES = 3
#: …and no single wait is longer than this (a Retry-After can be anything).
MAX_SLEEP = 60


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
    max_wait: Annotated[
        float,
        typer.Option(
            "--max-wait",
            min=0,
            metavar="SECONDS",
            help="When the server rate-limits uploads, wait at most this long in all "
            "before rejecting the rest (0: never wait).",
        ),
    ] = 60,
    url: UrlOption = None,
    json_: JsonOption = False,
) -> None:
    """Upload PDF and TXT files; one line per file with its id or why it was rejected.

    Exit 0 only when every file was accepted (and, with --wait, completed).

    Example: docintel upload --wait reports/*.pdf notes.txt
    """
    paths, problems = expand(files)
    ok = not problems
    for pattern, problem in problems:
        rejection = {"filename": Path(pattern).name, "code": "not_found", "message": problem}
        _show_rejected(pattern, rejection, json_, label=pattern)
    if not paths:  # nothing to send: no login or server needed to say so
        raise typer.Exit(1)
    accepted: list[dict[str, Any]] = []
    interactive = render.out().is_terminal and render.err().is_terminal
    with client(url) as api:
        progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=render.err(),
            transient=True,
            disable=json_ or not interactive,
        )
        pacing = _Pacing(max_wait)
        with progress:
            for path in paths:
                result = _send(api, path, progress, pacing)
                for doc in result["documents"]:
                    accepted.append(doc)
                    if json_:
                        render.json_line({"event": "uploaded", "path": str(path), **doc})
                    else:
                        render.line(
                            f"[green]accepted[/]  {render.escape(doc['filename'])}  {doc['id']}"
                        )
                for rejection in result["errors"]:
                    ok = False
                    _show_rejected(str(path), rejection, json_)
        if wait and accepted:
            board = render.Board()
            for doc in accepted:
                board.seed(doc)
            live = not json_ and render.out().is_terminal
            follow(
                api,
                board,
                [d["id"] for d in accepted],
                after=0,
                json_=json_,
                live=live,
                lines=not json_ and not live,
            )
            if live:
                for doc in accepted:
                    render.out().print(render.outcome_line(board.rows[doc["id"]]), soft_wrap=True)
            ok = ok and all(board.rows[d["id"]].status == "completed" for d in accepted)
    if not ok:
        raise typer.Exit(1)


class _Pacing:
    """The time this command may still spend waiting on the server's rate limit."""

    def __init__(self, max_wait: float) -> None:
        self.left = max_wait

    def delay(self, exc: RateLimited, retries: int) -> int | None:
        """Seconds to wait before sending again, or None: give up on this file."""
        seconds = min(math.ceil(exc.retry_after), MAX_SLEEP)
        if retries >= MAX_RETRIES or seconds > self.left:
            return None
        self.left -= seconds
        return seconds


def _send(api: Client, path: Path, progress: Progress, pacing: _Pacing) -> dict[str, Any]:
    """Upload one file, waiting out the server's rate limit within bounds.

    Always returns an upload result (`{"documents", "errors"}`): a file the
    server would still not take, or that cannot be read here, is a rejection.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:  # unreadable here: the server never saw it
        return _rejection(path, "unreadable_file", exc.strerror or str(exc))
    task = progress.add_task(path.name, total=size)
    retries = 0
    try:
        while True:
            progress.reset(task, total=size)
            try:
                return api.upload(path, lambda n: progress.advance(task, n))
            except RateLimited as exc:
                seconds = pacing.delay(exc, retries)
                if seconds is None:
                    return _rejection(path, exc.code, exc.message)
                render.note(f"docintel: rate-limited by the server; retrying in {seconds} s")
                sleep(seconds)
                retries += 1
    except OSError as exc:
        return _rejection(path, "unreadable_file", exc.strerror or str(exc))
    finally:
        progress.remove_task(task)


def _rejection(path: Path, code: str, message: str) -> dict[str, Any]:
    return {"documents": [], "errors": [{"filename": path.name, "code": code, "message": message}]}


def _show_rejected(
    path: str, rejection: dict[str, Any], json_: bool, label: str | None = None
) -> None:
    """One line for a file not accepted; `label` names it (default: its file name)."""
    if json_:
        render.json_line({"event": "rejected", "path": path, **rejection})
    else:
        render.line(
            f"[red]rejected[/]  {render.escape(label or rejection['filename'])}  "
            f"{render.escape(rejection['message'])}"
        )
