"""`docintel upload`."""

from __future__ import annotations

import glob
import math
from pathlib import Path
from time import sleep
from typing import TYPE_CHECKING, Annotated, Any

import typer

from docintel.cli import render
from docintel.cli.commands._common import JsonOption, UrlOption, client, handles_errors
from docintel.cli.commands.watch import follow

if TYPE_CHECKING:
    from docintel.cli.client import Client, RateLimited

#: Files larger than this go over the resumable (tus) endpoint even without --resumable.
RESUMABLE_ABOVE = 5 * 1024 * 1024
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
    resumable: Annotated[
        bool,
        typer.Option(
            "--resumable",
            help="Send each file in 1 MB pieces (tus), resuming after a dropped "
            "connection; files over 5 MB always go this way.",
        ),
    ] = False,
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
        api.on_reconnect = lambda message: render.note(f"docintel: {message}")
        pacing = _Pacing(max_wait)
        for path in paths:
            # The file's bar is gone before its line is printed (see _Bar).
            result = _send(api, path, pacing, bars=not json_ and interactive, resumable=resumable)
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


class _Bar:
    """One file's progress bar on stderr while its bytes go out; erased when it is done.

    One bar per file, stopped before the file's line is printed: a live display
    stays clean only of output that goes through its own console, and the
    file's line goes to stdout through another (Rich writes a console made on
    its stdout proxy straight to the real stdout, so the line landed after the
    bar, on the bar's row, and the bar was never erased). The bar is redrawn as
    the percentage sent changes, not only on Rich's 10 Hz timer: on a fast link
    the whole file goes out between two ticks and the only frame drawn said 0.
    """

    def __init__(self, name: str, total: int, *, shown: bool) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.total = total
        self._percent = -1
        self._progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=render.err(),
            transient=True,
            disable=not shown,
            # Notes (rate limits) go through render.err(), the bar's own console.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task(name, total=total)

    def __enter__(self) -> _Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def restart(self) -> None:
        """From zero again (the file is sent again after a rate limit)."""
        self._progress.reset(self._task, total=self.total)
        self._percent = -1

    def advance(self, sent: int) -> None:
        self._progress.advance(self._task, sent)
        done = self._progress.tasks[0].completed
        percent = int(done * 100 // self.total) if self.total else 100
        if percent != self._percent:
            self._percent = percent
            self._progress.refresh()


def _send(
    api: Client, path: Path, pacing: _Pacing, *, bars: bool, resumable: bool
) -> dict[str, Any]:
    """Upload one file, waiting out the server's rate limit within bounds.

    Always returns an upload result (`{"documents", "errors"}`): a file the
    server would still not take, or that cannot be read here, is a rejection.
    """
    from docintel.cli.client import NotFound, RateLimited

    try:
        size = path.stat().st_size
    except OSError as exc:  # unreadable here: the server never saw it
        return _rejection(path, "unreadable_file", exc.strerror or str(exc))
    retries = 0
    try:
        with _Bar(path.name, size, shown=bars) as bar:
            while True:
                bar.restart()
                try:
                    if resumable or size > RESUMABLE_ABOVE:
                        try:
                            return api.upload_resumable(path, bar.advance, bar.restart)
                        except NotFound:
                            if resumable:  # asked for: say that this server cannot
                                return _rejection(
                                    path,
                                    "not_resumable",
                                    "This server has no resumable uploads (/uploads/).",
                                )
                            # An older server: the whole file in one request, as before.
                    return api.upload(path, bar.advance)
                except RateLimited as exc:
                    seconds = pacing.delay(exc, retries)
                    if seconds is None:
                        return _rejection(path, exc.code, exc.message)
                    render.note(f"docintel: rate-limited by the server; retrying in {seconds} s")
                    sleep(seconds)
                    retries += 1
    except OSError as exc:
        return _rejection(path, "unreadable_file", exc.strerror or str(exc))


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
