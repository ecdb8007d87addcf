"""`docintel login` (and `logout`)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated

import typer

from docintel.cli import render
from docintel.cli.client import Client, Login, load_login, login_path, save_login
from docintel.cli.commands._common import JsonOption, handles_errors


@handles_errors
def login(
    url: Annotated[
        str | None, typer.Option(help="Server URL [DOCINTEL_URL, else the last one used].")
    ] = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Prompted if missing.")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="Prompted (hidden) if missing.")
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Log in to a server and store the token (mode 0600) in your config folder.

    Example: docintel login --url http://127.0.0.1:8000 -u demo
    """
    current = load_login()
    server = url or current.url
    with Client(server) as api:  # checks the URL before prompting
        if username is None:
            username = typer.prompt("Username", default=current.username or None)
        if password is None:
            password = typer.prompt("Password", hide_input=True)
        body = api.login(username, password)
        expires_at = time.time() + int(body.get("expires_in", 0))
        path = save_login(
            Login(url=api.url, token=api.token, username=username, expires_at=expires_at)
        )
    until = datetime.fromtimestamp(expires_at).astimezone()
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


def logout() -> None:
    """Forget the stored token.

    Example: docintel logout
    """
    path = login_path()
    path.unlink(missing_ok=True)
    render.note(f"Logged out (removed {path}).")
