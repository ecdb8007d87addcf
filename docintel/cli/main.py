"""The entry point of the `docintel` command (and of `python -m docintel`).

Nothing is imported here before it is needed: the Typer app (app.py) costs
more to import than `docintel --version` may take in all (issue 8: 60 ms
above `python -c pass`).
"""

from __future__ import annotations

import sys

# Not `from typing import TYPE_CHECKING`: `typing` alone is ~5 ms of `--version`.
# Type checkers take any `TYPE_CHECKING` as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import typer


def main() -> None:
    # Fast path: `docintel --version` alone is answered before Typer (and
    # Click, which it vendors) is imported; they alone took longer than the
    # whole target. The app answers the same for `--version` among other
    # arguments (its eager option, app.py).
    if sys.argv[1:] == ["--version"]:
        from docintel import __version__

        print(f"docintel {__version__}")
        return
    from docintel.cli.app import app

    app()


def __getattr__(name: str) -> typer.Typer:
    """`from docintel.cli.main import app` still works, and imports the app then."""
    if name == "app":
        from docintel.cli.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
