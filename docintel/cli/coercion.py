"""Command-line values into Python values, without Pydantic when none is needed.

Typer 0.29 coerces every parameter's value through a Pydantic `TypeAdapter`,
built the first time the parameter is processed — even for a value that is
missing, and for the root's `--install-completion`. Importing Pydantic and
building those adapters was the largest part of `docintel list --json` once
the CLI's own imports were lazy (issue 8: a third of its profile).

The values our commands get are nearly always plain: a string for a `str`, a
bool for a `bool`, a few digits within range for an `int`, strings for a
`list[str]`. For those, Pydantic gives back what went in (or what `int()`
makes of it), and so does this module. Everything else — every invalid value
included — goes to Typer's own coercion, so results and error messages do not
change (tests/test_cli_imports.py compares both on a table of values).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from typer import _click
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
from typer.core import TyperArgument, TyperOption

#: More digits than this could overflow Python's int-from-text limit: Typer decides.
MAX_DIGITS = 18


class _NotPlain:
    """Marks a value this module leaves to Typer."""


NOT_PLAIN = _NotPlain()


def plain_value(descriptor: TypeDescriptor, value: Any) -> Any:
    """`value` coerced as Typer would, or NOT_PLAIN when that needs Typer."""
    annotation, info = descriptor.annotation, descriptor.parameter_info
    if info.parser is not None:
        return NOT_PLAIN
    if annotation is str:
        return value if type(value) is str else NOT_PLAIN
    if annotation is bool:
        return value if type(value) is bool else NOT_PLAIN
    if annotation is int:
        if type(value) is str and value.isascii() and value.isdigit():
            if len(value) > MAX_DIGITS:
                return NOT_PLAIN
            value = int(value)
        if type(value) is not int or info.clamp:
            return NOT_PLAIN
        if (info.min is not None and value < info.min) or (
            info.max is not None and value > info.max
        ):
            return NOT_PLAIN
        return value
    if annotation == list[str]:
        if isinstance(value, list | tuple) and all(type(item) is str for item in value):
            return list(value)
        return NOT_PLAIN
    return NOT_PLAIN


@dataclass(frozen=True)
class PlainFirst(RuntimeParam):
    """A parameter's coercion: `plain_value`, else Typer's (built when first needed)."""

    descriptor: TypeDescriptor

    @cached_property
    def typer(self) -> RuntimeParam:
        return build_runtime_param(self.descriptor)

    def _coerce_value(self, value: Any, param: Any, ctx: _click.Context) -> Any:
        plain = plain_value(self.descriptor, value)
        if plain is not NOT_PLAIN:
            return plain
        return self.typer._coerce_value(value, param=param, ctx=ctx)


def plain_first(params: list[_click.Parameter]) -> None:
    """Give each Typer parameter not yet processed the coercion above."""
    for param in params:
        if isinstance(param, TyperArgument | TyperOption) and param._runtime_param is None:
            descriptor = param.type_descriptor
            param._runtime_param = PlainFirst(
                parameter_info=descriptor.parameter_info,
                annotation=descriptor.annotation,
                descriptor=descriptor,
            )
