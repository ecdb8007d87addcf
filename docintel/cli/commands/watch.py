"""`docintel watch`, and the following of the stream `upload --wait` shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from docintel.cli import render
from docintel.cli.commands._common import JsonOption, UrlOption, client, handles_errors
from docintel.cli.commands.documents import StatusOption

if TYPE_CHECKING:
    from docintel.cli.client import Client

SEED_ROWS = 15  # recent documents shown when `watch` starts without ids


def follow(
    api: Client,
    board: render.Board,
    document_ids: Sequence[str],
    *,
    after: int | None,
    json_: bool,
    live: bool,
    statuses: Sequence[str] = (),
    lines: bool = False,
) -> None:
    """Feed `board` from the stream; with ids, return once each is terminal.

    Output: JSON lines with `json_`, a Live table with `live`, a plain line per
    event with `lines`, else nothing (the caller prints outcomes).
    """
    waiting = set(document_ids)

    def reconnecting(message: str) -> None:
        if live:
            board.connection_note = message
        else:
            render.note(f"docintel: {message}")

    api.on_reconnect = reconnecting

    def consume() -> None:
        for event in api.events(document_ids, after=after):
            board.connection_note = None
            shown = not statuses or event.status in statuses
            if shown or event.document_id in board.rows:
                row = board.apply(event)
                if shown and json_:
                    render.json_line(event.as_json())
                elif shown and lines and event.terminal:
                    render.out().print(render.outcome_line(row), soft_wrap=True)
            if event.terminal:
                waiting.discard(event.document_id)
            if document_ids and not waiting:
                return

    if live:
        from rich.live import Live

        with Live(board, console=render.out(), refresh_per_second=4, auto_refresh=True) as screen:
            consume()
            screen.refresh()
    else:
        consume()


def full_ids(api: Client, document_ids: Sequence[str]) -> list[str]:
    """The full ids of ids or unique prefixes, as the stream's events carry them.

    An ambiguous or too short prefix ends the command with the server's answer;
    an unknown id is kept as given, and the stream reports it gone.
    """
    from docintel.cli.client import NotFound

    resolved = []
    for doc_id in document_ids:
        try:
            resolved.append(str(api.status(doc_id)["id"]))
        except NotFound:
            resolved.append(doc_id)
    return list(dict.fromkeys(resolved))


@handles_errors
def watch(
    document_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[ID...]", help="Only these ids (or unique prefixes); exit when all end."
        ),
    ] = None,
    status: StatusOption = None,
    since: Annotated[
        int | None,
        typer.Option(
            min=0,
            metavar="EVENT_ID",
            help="Replay events after this event id first (0: all history).",
        ),
    ] = None,
    url: UrlOption = None,
    json_: JsonOption = False,
) -> None:
    """Follow documents live: a table on a terminal, JSON lines otherwise.

    With IDs, exits once every one is completed or failed (1 if any failed);
    without, follows new events until Ctrl-C. Reconnects by itself.

    Example: docintel watch --json | jq -r 'select(.status=="failed") | .filename'
    """
    ids = list(dict.fromkeys(document_ids or []))
    live = not json_ and render.out().is_terminal
    as_json = not live
    board = render.Board()
    with client(url) as api:
        ids = full_ids(api, ids)
        # With ids, replay their history from the start: a document that has
        # already ended is reported at once. Without, follow from now on.
        after = since if since is not None else (0 if ids else None)
        if live and not ids and since is None:
            page = api.list(status or [], SEED_ROWS)
            for doc in reversed(page["items"]):  # oldest first, as events would add them
                board.seed(doc)
            # Stream from the event the list reflects: nothing missed in between.
            after = page.get("last_event_id")
        follow(api, board, ids, after=after, json_=as_json, live=live, statuses=status or [])
    if ids and any(board.rows[i].status != "completed" for i in ids if i in board.rows):
        raise typer.Exit(1)
