"""What every client command shares: the error path and the client."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from docintel.cli import render
from docintel.cli.client import Client, ClientError, load_login

F = TypeVar("F", bound=Callable[..., Any])

EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def fail(message: str, code: int) -> typer.Exit:
    """Print one line on stderr; the caller raises what this returns."""
    render.error(message)
    return typer.Exit(code)


def handles_errors(func: F) -> F:
    """The one error path: ClientError → one line on stderr and its exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ClientError as exc:
            raise fail(exc.message, exc.exit_code) from None
        except KeyboardInterrupt:
            render.note("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def client(**kwargs: Any) -> Client:
    """A client for the stored (or DOCINTEL_URL/DOCINTEL_TOKEN) login."""
    made = Client.from_login(load_login())
    for name, value in kwargs.items():
        setattr(made, name, value)
    return made
