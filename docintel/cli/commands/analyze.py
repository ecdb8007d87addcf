"""`docintel analyze`: the pipeline in-process, no server, no database."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from docintel.cli import render
from docintel.cli.commands._common import JsonOption, fail, handles_errors
from docintel.cli.commands.upload import expand

if TYPE_CHECKING:
    from docintel.core.config import Settings

log = logging.getLogger(__name__)


@handles_errors
def analyze(
    files: Annotated[list[str], typer.Argument(metavar="FILES...", help="Paths or globs.")],
    analyzer: Annotated[
        Literal["offline", "openai"] | None,
        typer.Option(help="Default: DOCINTEL_ANALYZER (openai when OPENAI_API_KEY is set)."),
    ] = None,
    json_: JsonOption = False,
) -> None:
    """Validate, extract and analyse files here, without a server; one result per file.

    Exit 1 if any file was rejected or could not be analysed.

    Example: docintel analyze --json notes/*.txt | jq -r .analysis.sentiment
    """
    # The analysis core (pydantic, the analyzers) and asyncio (~25 ms, and
    # `--help` imports this module) are imported only to analyse.
    import asyncio

    from docintel.core.config import ConfigError, Settings

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise fail(exc.message, 2) from None
    paths, problems = expand(files)
    results = asyncio.run(_analyze_all(paths, settings, analyzer))
    ok = not problems
    for pattern, problem in problems:
        _show(pattern, None, {"code": "not_found", "message": problem}, json_)
    for path, (analysis, error) in zip(paths, results, strict=True):
        ok = ok and error is None
        _show(str(path), analysis, error, json_)
    if not ok:
        raise typer.Exit(1)


async def _analyze_all(
    paths: list[Path], settings: Settings, name: str | None
) -> list[tuple[dict[str, Any] | None, dict[str, str] | None]]:
    from docintel.core.analysis import build_analyzer, describe_choice
    from docintel.core.errors import DocintelError
    from docintel.core.pipeline import analyze_file

    chosen = build_analyzer(settings, name)
    render.note(f"docintel: analysing with {describe_choice(settings, name)}")
    results: list[tuple[dict[str, Any] | None, dict[str, str] | None]] = []
    try:
        for path in paths:
            try:
                result = await analyze_file(path, chosen, settings)
            except DocintelError as exc:
                results.append((None, {"code": exc.code, "message": exc.message}))
            except Exception as exc:  # one bad file must not hide the others' results
                log.debug("analysing %s", path, exc_info=True)
                results.append(
                    (None, {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"})
                )
            else:
                results.append((result.model_dump(mode="json"), None))
    finally:
        close = getattr(chosen, "aclose", None)
        if close is not None:
            await close()
    return results


def _show(
    path: str, analysis: dict[str, Any] | None, error: dict[str, str] | None, json_: bool
) -> None:
    if json_:
        record: dict[str, Any] = {"path": path, "filename": Path(path).name}
        record.update({"analysis": analysis} if analysis else {"error": error})
        render.json_line(record)
        return
    from rich.rule import Rule

    console = render.out()
    if analysis:
        console.print(Rule(render.escape(path), align="left", style="green"))
        for part in render.analysis_parts(analysis):
            console.print(part)
        console.print()
    else:
        assert error is not None
        render.line(f"[red]failed[/]  {render.escape(path)}  {render.escape(error['message'])}")
