"""The `docintel` Typer app: `serve`, and the client commands of commands/.

Every command is `Lazy`: its module is imported only when it runs (or when
`--help` lists it), and the modules import their heavy libraries (httpx,
Rich, the analysis core) inside the functions that use them. `main.py` is the
entry point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from docintel import __version__
from docintel.cli import usage
from docintel.cli.usage import Lazy

DOCUMENTS = "Documents"  # a section of `docintel --help`

#: Every command, in the order `docintel --help` lists them within a section.
COMMANDS = {
    "serve": Lazy("docintel.cli.app:serve"),
    "worker": Lazy("docintel.cli.app:worker"),
    "login": Lazy("docintel.cli.commands.auth:login"),
    "upload": Lazy("docintel.cli.commands.upload:upload", DOCUMENTS),
    "watch": Lazy("docintel.cli.commands.watch:watch", DOCUMENTS),
    "list": Lazy("docintel.cli.commands.documents:list_", DOCUMENTS),
    "show": Lazy("docintel.cli.commands.documents:show", DOCUMENTS),
    "status": Lazy("docintel.cli.commands.documents:status", DOCUMENTS),
    "delete": Lazy("docintel.cli.commands.documents:delete", DOCUMENTS),
    "analyze": Lazy("docintel.cli.commands.analyze:analyze"),
    "logout": Lazy("docintel.cli.commands.auth:logout"),
}


class Group(usage.Group):
    lazy_commands = COMMANDS


app = usage.Typer(
    cls=Group,
    # Plain help, as in gh, git, llm and httpie: see usage.py and the README.
    rich_markup_mode=None,
    subcommand_metavar="COMMAND [ARGS...]",
    no_args_is_help=True,
    help="Document intelligence from the terminal: upload PDFs and text, watch them "
    "being analysed, read the results.",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [DOCINTEL_HOST].")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port [DOCINTEL_PORT]; 0: any free one.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder [DOCINTEL_DATA_DIR].")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Pipeline workers [DOCINTEL_WORKERS]; 0: the API and streams only "
            "(with DOCINTEL_DATABASE_URL, beside `docintel worker` processes).",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the API, the event streams and the workers.

    Example: docintel serve --port 8080 --data-dir ./data
    """
    from docintel.cli.serve import run
    from docintel.core.config import ConfigError, Settings
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


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Documents processed at once [DOCINTEL_WORKERS]."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Data folder, shared with the API nodes [DOCINTEL_DATA_DIR]."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run pipeline workers only, beside API nodes, on a shared PostgreSQL database.

    Needs DOCINTEL_DATABASE_URL, and the same data dir (uploads) as the API nodes.

    Example: docintel worker --concurrency 4
    """
    from docintel.cli.worker import run
    from docintel.core.config import ConfigError, Settings

    try:
        settings = Settings.from_env(workers=concurrency, data_dir=data_dir)
        if not settings.shared_database:
            raise ConfigError(
                "docintel worker needs DOCINTEL_DATABASE_URL (PostgreSQL): with the embedded "
                "database, `docintel serve` runs the workers itself."
            )
        if settings.workers < 1:
            raise ConfigError("docintel worker needs at least 1 worker (--concurrency).")
    except ConfigError as exc:
        typer.echo(f"docintel: {exc.message}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(settings, log_level))


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
