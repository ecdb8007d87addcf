"""The `docintel` command: `serve`, and the client commands registered from commands/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from docintel import __version__
from docintel.cli import usage
from docintel.cli.commands import analyze, auth, documents, upload, watch
from docintel.core.config import ConfigError, Settings

app = usage.Typer(
    cls=usage.Group,
    # Plain help, as in gh, git, llm and httpie: see usage.py and the README.
    rich_markup_mode=None,
    subcommand_metavar="COMMAND [ARGS...]",
    no_args_is_help=True,
    help="Document intelligence from the terminal: upload PDFs and text, watch them "
    "being analysed, read the results.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [DOCINTEL_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [DOCINTEL_PORT].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder [DOCINTEL_DATA_DIR].")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Pipeline workers [DOCINTEL_WORKERS].")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the API, the event streams and the workers.

    Example: docintel serve --port 8080 --data-dir ./data
    """
    from docintel.cli.serve import run
    from docintel.core.lock import DataDirInUse

    try:
        settings = Settings.from_env(host=host, port=port, data_dir=data_dir, workers=workers)
    except ConfigError as exc:
        typer.echo(f"docintel: {exc.message}", err=True)
        raise typer.Exit(2) from None
    try:
        run(settings, log_level)
    except DataDirInUse as exc:
        typer.echo(f"docintel: {exc.message}", err=True)
        raise typer.Exit(3) from None


app.command()(auth.login)
app.command(rich_help_panel="Documents")(upload.upload)
app.command(rich_help_panel="Documents")(watch.watch)
app.command("list", rich_help_panel="Documents")(documents.list_)
app.command(rich_help_panel="Documents")(documents.show)
app.command(rich_help_panel="Documents")(documents.status)
app.command(rich_help_panel="Documents")(documents.delete)
app.command()(analyze.analyze)
app.command()(auth.logout)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"docintel {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Document intelligence from the terminal."""


def main() -> None:
    app()
