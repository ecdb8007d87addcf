"""How `docintel` presents itself: help pages, usage lines, usage errors.

Left to itself, Typer shows each parameter's Python type in help (`<bool>`,
`<list[str]>`), wraps a variadic argument's name twice in usage lines
(`[[ID...]]...`, `{FILES...}...`) and prints usage errors as a framed box
under the usage line. Here, once for every command:

- help is plain text, like `gh`, `git`, `llm` or `httpie` (why: README, "Help
  and errors"); an option that takes a value shows a name for it (`--port
  PORT`, `--analyzer [offline|openai]`), a flag shows nothing;
- usage lines read `FILES...`, `ID`, `[ID...]`;
- a usage error is one line on stderr, `docintel: <message> (see 'docintel
  list --help')`, with exit status 2, like every other error of the CLI.

Commands keep declaring plain `typer.Option`/`typer.Argument`s; a `metavar=`
there names the value (`metavar="SECONDS"`), brackets and dots are added here.

A group's commands can also be `Lazy`: named with the module and function
that implement them, imported only when the command is looked up (to run it,
or to list it in `--help`), so that `docintel list` does not pay for importing
and building `upload`, `watch` and the rest.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, NoReturn, TypeVar

import typer

# Typer (0.26+) vendors Click: its exceptions, contexts and formatter live here,
# not in the `click` package (`click.UsageError` would never match).
from typer import _click
from typer._click.exceptions import BadParameter, NoArgsIsHelpError, UsageError
from typer._click.types import FloatParamType, FloatRange, IntParamType, IntRange, ParamType
from typer._types import TyperChoice
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.main import get_command_from_info
from typer.models import CommandInfo

from docintel.cli import render

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SECTION = "Commands"
_EXAMPLE = re.compile(r"^(Examples?):\s*(.*)$", re.DOTALL)


def _value_name(param: TyperOption) -> str:
    """What an option's value is called in help: its choices, else its name."""
    if isinstance(param.type, TyperChoice) and param.type.choices:
        names = (str(c.value) if isinstance(c, Enum) else str(c) for c in param.type.choices)
        return f"[{'|'.join(names)}]"
    return (param.name or "value").upper()


def _bare(metavar: str) -> str:
    """`[ID...]` → `ID`: the usage line adds brackets and dots itself."""
    return metavar.strip("[]{}<>").removesuffix("...").strip("[]{}<>") or metavar


def name_values(params: list[_click.Parameter]) -> None:
    """Give every argument and every option that takes a value a metavar, and
    every number a type whose errors say what was typed and what it should be.

    Typer falls back to the Python type for both; Click's own messages
    ("Missing argument 'FILES'") use the argument's metavar too.
    """
    for param in params:
        param.type = _worded(param.type)
        if isinstance(param, TyperArgument):
            param.metavar = _bare(param.metavar or (param.name or "arg").upper())
        elif isinstance(param, TyperOption):
            takes_value = not (param.is_flag or param.count)
            if takes_value and param.metavar is None:
                param.metavar = _value_name(param)


class _Worded(ParamType):
    """Click's number errors put as a person would, quoting what was typed:
    `'abc' should be a valid integer`, `'0' should be from 1 to 500` (Click
    says `0 is not in the range 1<=x<=500`, with the number it parsed)."""

    def convert(
        self, value: Any, param: _click.Parameter | None, ctx: _click.Context | None
    ) -> Any:
        try:
            number = super().convert(value, param, ctx)
        except BadParameter:
            self.fail(f"{value!r} should be {self.should_be(value)}", param, ctx)
        if number != number:  # NaN passes every range check; it is no number to use
            self.fail(f"{value!r} should be a number", param, ctx)
        return number

    def should_be(self, value: Any) -> str:
        try:
            float(value) if isinstance(self, FloatParamType) else int(value)
        except (TypeError, ValueError):
            return "a valid integer" if isinstance(self, IntParamType) else "a number"
        assert isinstance(self, IntRange | FloatRange)
        if self.min is not None and self.max is not None:
            return f"from {self.min} to {self.max}"
        return f"at least {self.min}" if self.min is not None else f"at most {self.max}"


class _WordedInt(_Worded, IntParamType):
    pass


class _WordedFloat(_Worded, FloatParamType):
    pass


class _WordedIntRange(_Worded, IntRange):
    pass


class _WordedFloatRange(_Worded, FloatRange):
    pass


def _worded(kind: ParamType) -> ParamType:
    """The same type, with `_Worded`'s errors (Typer makes these four for numbers)."""
    if type(kind) is IntRange or type(kind) is FloatRange:
        worded = _WordedIntRange if type(kind) is IntRange else _WordedFloatRange
        return worded(kind.min, kind.max, kind.min_open, kind.max_open, kind.clamp)
    if type(kind) is IntParamType:
        return _WordedInt()
    if type(kind) is FloatParamType:
        return _WordedFloat()
    return kind


def argument_usage(param: TyperArgument) -> str:
    """`FILES...` (required, variadic), `ID` (required), `[ID...]` (optional)."""
    name = param.metavar or (param.name or "arg").upper()
    if param.nargs != 1:
        name += "..."
    return name if param.required else f"[{name}]"


def _help_text(text: str) -> str:
    """Keep an example whole on its own indented line, ready to copy.

    Click rewraps every paragraph to the terminal width, which can break a
    command line in two; a paragraph that starts with `\\b` is kept as is.
    """
    paragraphs = []
    for paragraph in text.split("\n\n"):
        match = _EXAMPLE.match(paragraph.strip())
        if match:
            lines = [line.strip() for line in match.group(2).splitlines() if line.strip()]
            paragraph = "\n".join(["\b", f"{match.group(1)}:", *(f"  {line}" for line in lines)])
        paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


class Command(TyperCommand):
    """A command whose help, usage line and errors read as described above."""

    def __init__(self, name: str | None, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        name_values(self.params)

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        pieces += [argument_usage(p) for p in self.params if isinstance(p, TyperArgument)]
        return pieces

    def format_help_text(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        text = inspect.cleandoc(self.help or "").partition("\f")[0]
        if text:
            formatter.write_paragraph()
            with formatter.indentation():
                formatter.write_text(_help_text(text))

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        write_params(self, ctx, formatter)

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            raise _in_context(exc, ctx) from exc.__cause__


def write_params(
    command: _click.Command, ctx: _click.Context, formatter: _click.HelpFormatter
) -> None:
    """The "Arguments" and "Options" sections, without Python types."""
    arguments: list[tuple[str, str]] = []
    options: list[tuple[str, str]] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if isinstance(param, TyperArgument):
            # Typer appends the type to the name ("ID <str>"): name it ourselves.
            arguments.append((argument_usage(param).strip("[]"), record[1]))
        else:
            options.append(record)
    for title, rows in (("Arguments", arguments), ("Options", options)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


@dataclass(frozen=True)
class Lazy:
    """A command by where it is: `target` is "package.module:function"."""

    target: str
    rich_help_panel: str | None = None  # its section in the group's help


class LazyCommands(MutableMapping[str, _click.Command]):
    """A group's commands by name, in order; a `Lazy` one is imported and built
    (as Typer builds a registered command) the first time it is looked up.

    Listing the names (`list_commands`, `in`) imports nothing.
    """

    def __init__(
        self,
        commands: Mapping[str, _click.Command | Lazy],
        build: Callable[[str, Lazy], _click.Command],
    ) -> None:
        self._commands = dict(commands)
        self._build = build

    def __getitem__(self, name: str) -> _click.Command:
        command = self._commands[name]
        if isinstance(command, Lazy):
            command = self._commands[name] = self._build(name, command)
        return command

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._commands[name] = command

    def __delitem__(self, name: str) -> None:
        del self._commands[name]

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)


class Group(TyperGroup):
    """The `docintel` command itself: commands listed in sections (their
    `rich_help_panel`), their summaries whole, and every usage error one line.

    A subclass names its `lazy_commands`; they follow the registered ones.
    """

    lazy_commands: ClassVar[Mapping[str, Lazy]] = {}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        name_values(self.params)
        self.commands = LazyCommands({**self.commands, **self.lazy_commands}, self._build)

    def _build(self, name: str, lazy: Lazy) -> _click.Command:
        module, _, function = lazy.target.partition(":")
        info = CommandInfo(
            name=name,
            cls=Command,
            callback=getattr(importlib.import_module(module), function),
            rich_help_panel=lazy.rich_help_panel,
        )
        # Typer's default; it only matters for Rich tracebacks, which are off.
        return get_command_from_info(
            info, pretty_exceptions_short=True, rich_markup_mode=self.rich_markup_mode
        )

    def format_options(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        write_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        shown = [(n, c) for n in self.list_commands(ctx) if (c := self.get_command(ctx, n))]
        shown = [(name, command) for name, command in shown if not command.hidden]
        width = max((len(name) for name, _ in shown), default=0)
        sections: dict[str, list[tuple[str, str]]] = {}
        for name, command in shown:
            section = getattr(command, "rich_help_panel", None) or DEFAULT_SECTION
            # No limit: Click would cut a summary short with "..." at 45 characters.
            summary = command.get_short_help_str(limit=1_000)
            # Padded to one width, so that every section lines up.
            sections.setdefault(section, []).append((name.ljust(width), summary))
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:
            raise _in_context(exc, ctx) from exc.__cause__

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: _click.Context | None = None,
        **extra: Any,
    ) -> _click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            usage_error(exc)

    def invoke(self, ctx: _click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            usage_error(exc)


def _in_context(exc: UsageError, ctx: _click.Context) -> UsageError:
    """Click's parser raises some errors ("option '-n' requires an argument")
    without the context that names the command for the `--help` hint."""
    if exc.ctx is None:
        exc.ctx, exc.cmd = ctx, ctx.command
    return exc


def usage_error(exc: UsageError) -> NoReturn:
    """Print a usage error as one line on stderr and exit with its status (2).

    `docintel` alone still prints the help (Click signals that as a usage error).
    """
    if isinstance(exc, NoArgsIsHelpError):
        raise exc
    render.error(one_line(exc))
    raise typer.Exit(exc.exit_code) from None


def one_line(exc: UsageError) -> str:
    """`Missing argument 'ID'.` → `missing argument 'ID' (see 'docintel show --help')`."""
    message = " ".join(exc.format_message().split()).removesuffix(".")
    if re.match(r"[A-Z][a-z]", message):
        message = message[0].lower() + message[1:]
    ctx = exc.ctx
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        names = ctx.help_option_names
        option = "--help" if "--help" in names else names[0]
        message += f" (see '{ctx.command_path} {option}')"
    return message


class Typer(typer.Typer):
    """`typer.Typer` whose commands are `Command`s, so that every command
    registered on the app, now or later, gets the same help and errors."""

    def command(
        self, name: str | None = None, *, cls: type[TyperCommand] | None = None, **kwargs: Any
    ) -> Callable[[F], F]:
        decorator: Callable[[F], F] = super().command(name, cls=cls or Command, **kwargs)
        return decorator
