"""`docintel list | show | status | delete`."""

from __future__ import annotations

from typing import Annotated

import typer

from docintel.cli import render
from docintel.cli.commands._common import JsonOption, UrlOption, client, fail, handles_errors
from docintel.core.statuses import STATUSES


def check_statuses(values: list[str] | None) -> list[str]:
    for value in values or []:
        if value not in STATUSES:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(STATUSES)}.", param_hint="'--status'"
            )
    return values or []


ID_HELP = "A document id, or a unique prefix of it (at least 4 characters, e.g. 6db7e49a)."

StatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        callback=check_statuses,
        metavar="STATUS",
        help=f"Only this status (repeatable): {', '.join(STATUSES)}.",
    ),
]


@handles_errors
def list_(
    status: StatusOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=500, metavar="N", help="At most N.")
    ] = 50,
    url: UrlOption = None,
    json_: JsonOption = False,
) -> None:
    """List your documents, newest first.

    Example: docintel list --status failed --limit 10
    """
    with client(url) as api:
        page = api.list(status or [], limit)
    if json_:
        render.json_doc(page)
        return
    if not page["items"]:
        render.note("No documents." if not status else "No documents with that status.")
        return
    if render.out().is_terminal:
        render.out().print(render.documents_table(page["items"]))
    else:  # tab-separated, one document per line: for cut, awk and sort
        for d in page["items"]:
            # A tab or newline in a file name must not forge a field or a row.
            d = render.printable(d)
            render.plain(
                "\t".join(
                    [d["id"], d["filename"], d["status"], str(d["size_bytes"]), d["updated_at"]]
                )
            )
    if page["total"] > len(page["items"]):
        render.note(f"{len(page['items'])} of {page['total']} shown; use --limit for more.")


@handles_errors
def show(
    document_id: Annotated[str, typer.Argument(metavar="ID", help=ID_HELP)],
    url: UrlOption = None,
    json_: JsonOption = False,
) -> None:
    """A document: its status timeline and its analysis.

    Example: docintel show 6db7e49a
    """
    with client(url) as api:
        doc = api.get(document_id)
    if json_:
        render.json_doc(doc)
        return
    render.out().print(render.document_detail(doc))


@handles_errors
def status(
    document_id: Annotated[str, typer.Argument(metavar="ID", help=ID_HELP)],
    url: UrlOption = None,
    json_: JsonOption = False,
) -> None:
    """A document's current status (exit 1 if it failed).

    Example: docintel status 6db7e49a && echo done-or-running
    """
    with client(url) as api:
        state = api.status(document_id)
    if json_:
        render.json_line(state)
    else:
        text = (
            f"{render.escape(state['id'])}  {render.styled_status(state['status'])}  "
            f"{render.local_time(state.get('updated_at'))}"
        )
        if state.get("error"):
            text += f"  {render.escape(state['error'])}"
        render.line(text)
    if state["status"] == "failed":
        raise typer.Exit(1)


@handles_errors
def delete(
    document_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Document ids, or unique prefixes of them.")
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    json_: JsonOption = False,
) -> None:
    """Delete documents, their files and their history (in any status).

    Example: docintel delete 6db7e49a 0aab7c20 --yes
    """
    from docintel.cli.client import ApiError

    if not yes:
        noun = "this document" if len(document_ids) == 1 else f"these {len(document_ids)} documents"
        try:
            confirmed = typer.confirm(f"Delete {noun}?", default=False, err=True)
        except typer.Abort:  # no answer (stdin closed): do nothing
            confirmed = False
        if not confirmed:
            raise fail("nothing deleted (add --yes to skip the question)", 1)
    missing = 0
    with client(url) as api:
        for doc_id in document_ids:
            try:
                # A prefix is resolved first, so that what was deleted is named in full.
                full_id = api.status(doc_id)["id"]
                api.delete(full_id)
            except ApiError as exc:
                if exc.status not in (400, 404, 409):  # about this id: go on with the others
                    raise
                missing += 1
                if json_:
                    render.json_line({"id": doc_id, "deleted": False, "error": exc.code})
                else:  # the same words as `show` and `status`
                    render.error(exc.message)
                continue
            if json_:
                render.json_line({"id": full_id, "deleted": True})
            else:
                render.line(f"deleted {render.escape(full_id)}")
    if missing:
        raise typer.Exit(1)
