"""Source readers: one module per format, each a generator of exactly one `Record | Reject` per input.

    spec = SourceSpec.parse("rafdb:/data/RAF-DB/basic")
    for item in read_source(spec, seed=0):
        ...

Kinds: `fer2013-csv`, `fer2013-folder`, `rafdb`, `folder`, `utkface`. Readers take local paths;
`fer_model.prepare` resolves `gs://` URIs with `fer_model.storage.local_source` first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from fer_model.errors import ConfigError, DataError
from fer_model.readers._common import SPLIT_MODES, SplitMode, check_split_mode
from fer_model.readers.fer2013_csv import read_fer2013_csv
from fer_model.readers.fer2013_folder import read_fer2013_folder
from fer_model.readers.folder import read_folder
from fer_model.readers.rafdb import read_rafdb
from fer_model.readers.utkface import read_utkface
from fer_model.records import Record, Reject

logger = logging.getLogger(__name__)

Reader = Callable[..., Iterator[Record | Reject]]

#: kind -> (reader, default source name used in records, rejects and the manifest).
_READERS: dict[str, tuple[Reader, str]] = {
    "fer2013-csv": (read_fer2013_csv, "fer2013"),
    "fer2013-folder": (read_fer2013_folder, "fer2013"),
    "rafdb": (read_rafdb, "rafdb"),
    "folder": (read_folder, "folder"),
    "utkface": (read_utkface, "utkface"),
}
KINDS: tuple[str, ...] = tuple(_READERS)

__all__ = ["KINDS", "SPLIT_MODES", "SourceSpec", "SplitMode", "read_source"]


@dataclass(frozen=True)
class SourceSpec:
    """One input source: its format (`kind`), where it is (local path or gs:// URI), and the name
    its records carry (defaults to the dataset's name, e.g. "fer2013" for both FER2013 kinds)."""

    kind: str
    path: str
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _READERS:
            raise ConfigError(f"unknown source kind {self.kind!r}; expected one of {KINDS}")
        if isinstance(self.path, os.PathLike):
            object.__setattr__(self, "path", os.fspath(self.path))
        if not isinstance(self.path, str) or not self.path:
            raise ConfigError(f"source {self.kind!r} needs a non-empty path, got {self.path!r}")
        if not self.name:
            object.__setattr__(self, "name", _READERS[self.kind][1])

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """`"kind:path"` (only the first colon splits, so `"rafdb:gs://bucket/raf"` works)."""
        kind, sep, path = text.partition(":")
        if not sep or not kind or not path:
            raise ConfigError(f"source {text!r} must look like KIND:PATH with KIND one of {KINDS}")
        return cls(kind=kind.strip(), path=path)


def read_source(
    spec: SourceSpec | str,
    *,
    seed: int = 0,
    split_mode: SplitMode = "official",
    notes: list[str] | None = None,
) -> Iterator[Record | Reject]:
    """Records and rejects of one local source, in a reproducible order.

    Args:
        spec: The source, or its "kind:path" text.
        seed: Seeds every split the source does not fix itself.
        split_mode: "official" (the dataset's own splits), "holdout" (FER2013: official validation
            becomes test, a seeded 10% of train validation) or "paper" (RAF-DB: random 90/10
            train/validation of everything); sources with fixed splits ignore it.
        notes: Receives human-readable remarks about the source (e.g. records kept without some
            labels), for the manifest.

    Raises:
        DataError: the path does not exist, is remote, or the source is malformed as a whole.
        ConfigError: unknown kind or split mode.
    """
    if isinstance(spec, str):
        spec = SourceSpec.parse(spec)
    check_split_mode(split_mode)
    if "://" in spec.path:
        raise DataError(f"{spec.kind} source {spec.path} is remote; resolve it with storage.local_source first")
    path = Path(spec.path)
    if not path.exists():
        raise DataError(f"{spec.kind} source {path} does not exist; check the path")
    reader, _ = _READERS[spec.kind]
    logger.debug("reading %s source %s as %r", spec.kind, path, spec.name)
    return reader(path, source=spec.name, seed=seed, split_mode=split_mode, notes=notes)
