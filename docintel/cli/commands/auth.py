"""`docintel login` (and `logout`)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from docintel.cli import render
from docintel.cli.commands._common import JsonOption, UrlOption, fail, handles_errors


@handles_errors
def login(
    url: UrlOption = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Prompted if missing.")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="Prompted (hidden) if missing.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Log in to a server, store the token (mode 0600) for that server, and make
    it the default one.

    Example: docintel login --url localhost:8000 -u demo
    """
    from docintel.cli.client import Client
    from docintel.cli.logins import DEFAULT_URL, Login, read_logins, save_login

    logins = read_logins()
    with Client(url or logins.default or DEFAULT_URL) as api:
        # Checked before prompting: a password is never typed for, or sent to,
        # something that is not a docintel server.
        api.check_server()
        known = logins.by_url.get(api.url)
        if username is None:
            username = _ask("Username", default=(known.username if known else None))
        if password is None:
            password = _ask("Password", hide_input=True)
        api.login(username, password)
        path = save_login(
            Login(
                url=api.url,
                token=api.token,
                username=username,
                issued_at=api.issued_at,
                expires_at=api.expires_at,
            )
        )
    until = datetime.fromtimestamp(api.expires_at or 0).astimezone()
    if json_:
        render.json_line(
            {
                "url": api.url,
                "username": username,
                "expires_at": until.isoformat(),
                "config": str(path),
            }
        )
        return
    render.note(f"Token stored in {path}")
    render.line(
        f"Logged in to {render.escape(api.url)} as [bold]{render.escape(username)}[/]; "
        f"the token is valid until {until:%Y-%m-%d %H:%M %Z}."
    )


def _ask(what: str, **kwargs: Any) -> str:
    """A prompt whose Ctrl-C is an interruption (130), and whose end of input
    (no terminal, nothing piped) is a usage error, not Click's "Aborted!" (1)."""
    try:
        return str(typer.prompt(what, **kwargs))
    except typer.Abort:
        if sys.stdin.isatty():
            raise KeyboardInterrupt from None
        flag = "-u" if what == "Username" else "-p"
        raise fail(f"no {what.lower()} on stdin to read: give it with {flag}", 2) from None


@handles_errors
def logout(
    url: UrlOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Forget the logins to every server.")] = False,
) -> None:
    """Forget the stored login to a server (the default one unless --url names another).

    Example: docintel logout --url localhost:8000
    """
    from docintel.cli.client import check_url
    from docintel.cli.logins import InvalidServerURL, forget_login

    try:
        gone = forget_login(url, everything=all_)
    except InvalidServerURL as exc:
        check_url(str(exc))  # raises the one-line "invalid server URL" error
        raise
    if not gone:
        render.note("Not logged in there; nothing to forget.")
    for server in gone:
        render.note(f"Logged out of {server}.")
