"""What every client command shares: the error path and the client.

Command modules are imported to list them in `--help`: they import httpx
(client.py, logins.py), Rich and the core inside the functions that run.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from docintel.cli import render

if TYPE_CHECKING:
    from docintel.cli.client import Client

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="DOCINTEL_URL",
        show_envvar=False,  # named in the help text, once
        metavar="URL",
        help="The server [DOCINTEL_URL, else the last one you logged in to, else "
        "http://127.0.0.1:8000]; the scheme may be left out (localhost:8000).",
    ),
]


def fail(message: str, code: int) -> typer.Exit:
    """Print one line on stderr; the caller raises what this returns."""
    render.error(message)
    return typer.Exit(code)


def handles_errors(func: F) -> F:
    """The one error path: ClientError → one line on stderr and its exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from docintel.cli.client import ClientError

        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            raise fail(exc.message, exc.exit_code) from None
        except OSError as exc:
            # Local, since the client turns every network error into a ClientError:
            # a config dir that is a file, a login file we may not write…
            where = f"cannot use {exc.filename}: " if exc.filename else ""
            raise fail(f"{where}{exc.strerror or exc}", 2) from None
        except KeyboardInterrupt:
            render.note("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def client(url: str | None = None, **kwargs: Any) -> Client:
    """A client for `url` (--url/DOCINTEL_URL, else the default server) with the
    login stored for that very server, or DOCINTEL_TOKEN."""
    from docintel.cli.client import Client, check_url
    from docintel.cli.logins import InvalidServerURL, load_login

    try:
        login = load_login(url)
    except InvalidServerURL as exc:
        check_url(str(exc))  # raises the one-line "invalid server URL" error
        raise
    made = Client.from_login(login)
    for name, value in kwargs.items():
        setattr(made, name, value)
    return made
