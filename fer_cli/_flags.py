"""CLI flags derived from the settings dataclasses: a flag's type, choices and default come from its field.

So `fer-mtl train --epochs` and `TrainConfig.epochs` cannot drift apart: the default is read from the
dataclass, never retyped here. The destination of every flag is the field's name, so
`settings_from(args, ...)` hands the values straight to the dataclass.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from fer_model._settings import field_default

#: Flag spellings that differ from `--field-name`, the same in every command.
_FLAG_NAMES = {"learning_rate": "--lr", "n_trials": "--trials", "time_limit_s": "--time-limit"}


def add_settings_flags(parser: argparse.ArgumentParser, cls: type, helps: Mapping[str, str]) -> None:
    """Add one flag per field named in `helps` (field -> help text), typed and defaulted from `cls`.

    A bool field defaulting to False becomes a `store_true` switch; a `Literal` field gets its
    values as choices; an `X | None` field takes an X (default None).
    """
    hints = typing.get_type_hints(cls)
    for name, text in helps.items():
        flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        default = field_default(cls, name)
        kind, choices = _scalar(hints[name])
        if kind is bool:
            if default is not False:
                raise TypeError(f"{cls.__name__}.{name}: only bools defaulting to False become switches")
            parser.add_argument(flag, dest=name, action="store_true", help=text)
        else:
            parser.add_argument(
                flag, dest=name, type=kind, choices=choices, default=default, help=f"{text} (default: %(default)s)"
            )


def settings_from(args: argparse.Namespace, helps: Mapping[str, str]) -> dict[str, Any]:
    """The values of the flags `add_settings_flags` added for `helps`, keyed by field name."""
    return {name: getattr(args, name) for name in helps}


def _scalar(hint: Any) -> tuple[type, tuple[Any, ...] | None]:
    """(argparse type, choices) for a field's type hint."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (hint,) = [h for h in typing.get_args(hint) if h is not type(None)]
    if typing.get_origin(hint) is Literal:
        values = typing.get_args(hint)
        return type(values[0]), values
    if hint in (bool, int, float, str):
        return hint, None
    raise TypeError(f"no command-line form for a field of type {hint!r}")
