"""What every settings dataclass shares: JSON round trips, the value checks, the loss-weight parser.

`ModelConfig`, `TrainConfig`, `AlignConfig`, `SearchSpace` and `TuneConfig` each stay in the module
they configure and mix in `Settings`; their field defaults are the only place a default is written.
Components, pipeline parameters and CLI flags read those defaults (`defaults`, `field_default`) and
pass a whole config as one JSON object (`to_json` / `from_json`), so nothing retypes them.
Light on purpose: no numpy, no Keras.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any, Self

from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES


def is_number(value: object) -> bool:
    """A finite int or float (not a bool, not NaN, not infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_int(name: str, value: object, *, minimum: int) -> None:
    """ConfigError unless `value` is an int (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"`{name}` must be an int >= {minimum}, got {value!r}")


def check_bool(name: str, value: object) -> None:
    """ConfigError unless `value` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"`{name}` must be a bool, got {value!r}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _label(name: str) -> str:
    # A command-line flag is quoted as typed (--loss-weights), a field or parameter in backticks.
    return name if name.startswith("-") else f"`{name}`"


class Settings:
    """Mixin for frozen, validated settings dataclasses: `to_dict`/`from_dict` and their JSON forms.

    Validation stays in each class's `__post_init__`, so every way of building one (keywords,
    `from_dict`, `dataclasses.replace`) is checked by the same code.
    """

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (tuples become lists, mappings plain dicts)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_json(self) -> str:
        """`to_dict` as a JSON object string, keys sorted (stable, so it caches and compares well)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`; missing fields take their defaults, unknown keys are an error."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__} settings must be a mapping of field -> value, got {values!r}")
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} settings {unknown}; expected some of {known}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse a JSON object of settings ("" or "{}" = every default)."""
        return cls.from_dict(parse_json_object(text, name=cls.__name__))


def parse_json_object(text: str, *, name: str) -> dict[str, Any]:
    """A JSON object from `text` ("" = {}); ConfigError naming `name` when it is not one."""
    label = _label(name)
    if not isinstance(text, str):
        raise ConfigError(f"{label} must be a JSON object string, got {text!r}")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{label} must be a JSON object ({{...}}), got {text!r}: {e}") from e
    if not isinstance(value, dict):
        raise ConfigError(f"{label} must be a JSON object, got {text!r}")
    return value


def field_default(cls: type, name: str) -> Any:
    """The default of dataclass field `name` of `cls` (calling its default factory if it has one)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ConfigError(f"{cls.__name__}.{name} has no default")
    raise ConfigError(f"{cls.__name__} has no field {name!r}")


def defaults(cls: type) -> dict[str, Any]:
    """JSON-ready defaults of every field of `cls` that has one (required fields are left out)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            out[f.name] = _jsonable(field_default(cls, f.name))
    return out


def parse_loss_weights(text: str, *, name: str = "loss_weights") -> dict[str, float]:
    """Loss weights from `emotion=2,age=4` or a JSON object `{"emotion": 2, "age": 4}`; "" gives {}.

    Only the tasks named are returned (callers lay them over the defaults). Raises ConfigError
    naming `name` for an unknown task or a weight that is not a finite number >= 0.
    """
    label = _label(name)
    if not isinstance(text, str):
        raise ConfigError(f"{label} must be text like emotion=2,age=4 or a JSON object, got {text!r}")
    if text.strip().startswith("{"):
        items = list(parse_json_object(text, name=name).items())
    else:
        items = []
        for item in (i.strip() for i in text.split(",")):
            if not item:
                continue
            task, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"{label} item {item!r} must be TASK=WEIGHT, e.g. emotion=2,age=4")
            try:
                items.append((task.strip(), float(value)))
            except ValueError:
                raise ConfigError(f"{label} item {item!r}: {value.strip()!r} is not a number") from None
    return check_loss_weights(dict(items), name=name)


def check_loss_weights(weights: object, *, name: str = "loss_weights") -> dict[str, float]:
    """A private {task: float} copy of `weights`; ConfigError on an unknown task or a bad weight."""
    label = _label(name)
    if not isinstance(weights, Mapping):
        raise ConfigError(f"{label} must be a mapping task -> weight, got {weights!r}")
    out: dict[str, float] = {}
    for task, weight in weights.items():
        if task not in TASK_NAMES:
            raise ConfigError(f"{label} has unknown task {task!r}; expected some of {TASK_NAMES}")
        if not is_number(weight) or weight < 0:
            raise ConfigError(f"{_label(f'{name}[{task!r}]')} must be a finite number >= 0, got {weight!r}")
        out[task] = float(weight)
    return out
