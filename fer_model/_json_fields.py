"""Typed access to a parsed JSON file, with errors that name the file, the key path and the fix."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fer_model.errors import ArtifactError


class JsonFields:
    """Typed access to one JSON object of a file; every error names the file and the key path."""

    def __init__(self, data: Any, *, source: str, fix: str, where: str = "") -> None:
        self.source, self.fix, self.where = source, fix, where
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: `{where or '(top level)'}` must be a JSON object, "
                                f"got {type(data).__name__}; {fix}")
        self.data: dict[str, Any] = data

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, expected: str, value: Any) -> ArtifactError:
        return ArtifactError(f"{self.source}: `{self.path(key)}` must be {expected}, got {value!r}; {self.fix}")

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> Any:
        if key not in self.data:
            raise ArtifactError(f"{self.source} lacks the key `{self.path(key)}`; {self.fix}")
        return self.data[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def text_or_none(self, key: str) -> str | None:
        if self.get(key) is None:
            return None
        value = self.data[key]
        if not isinstance(value, str):
            raise self.fail(key, "a string or null", value)
        return value

    def integer(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer", value)
        return value

    def number(self, key: str) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a number", value)
        return float(value)

    def number_or_none(self, key: str) -> float | None:
        value = self.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self.fail(key, "a number or null", value)
        return None if value is None else float(value)

    def flag_or_none(self, key: str) -> bool | None:
        value = self.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(key, "true or false or null", value)

    def obj(self, key: str) -> JsonFields:
        return JsonFields(self.get(key), source=self.source, fix=self.fix, where=self.path(key))

    def plain(self, key: str) -> dict[str, Any]:
        """A section kept as a JSON object without a schema of its own here."""
        return dict(self.obj(key).data)

    def names(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "a list of strings", value)
        return tuple(value)

    def numbers(self, key: str) -> dict[str, float]:
        """A JSON object of numbers (loss weights, validation metrics)."""
        section = self.obj(key)
        return {k: section.number(k) for k in section.data}

    def name_lists(self, key: str) -> dict[str, tuple[str, ...]]:
        """A JSON object of string lists ({task: [classes]})."""
        section = self.obj(key)
        return {k: section.names(k) for k in section.data}


def load_json(path: Path, *, fix: str) -> Any:
    """The parsed content of `path`; ArtifactError (with `fix`) when it is unreadable or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ArtifactError(f"{path} cannot be parsed as JSON: {e}; {fix}") from e


def find_file(path: str | os.PathLike[str], name: str, *, what: str, fix: str) -> Path:
    """`path` itself when it is a file, else `path/name`; ArtifactError when there is none."""
    given = Path(path)
    target = given / name if given.is_dir() else given
    if not target.is_file():
        raise ArtifactError(f"no {name} at {str(given)!r} (looked for {str(target)!r}): pass {what}; {fix}")
    return target
