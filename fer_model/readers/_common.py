"""Helpers shared by the readers: seeded hash splits, emotion folder names, image file listing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from fer_model.errors import ConfigError, DataError
from fer_model.records import Split
from fer_model.tasks import EMOTION

SplitMode = Literal["official", "paper", "holdout"]
SPLIT_MODES: tuple[SplitMode, ...] = ("official", "paper", "holdout")

#: Share of train that "holdout" mode moves to validation.
HOLDOUT_VALIDATION_FRACTION = 0.1

#: File name endings a folder reader treats as images (compared lower-case).
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")

# Folder names seen in public emotion datasets, mapped to our class names. Lower-case keys.
_EMOTION_ALIASES: dict[str, str] = {
    "anger": "angry",
    "disgusted": "disgust",
    "fearful": "fear",
    "scared": "fear",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "calm": "neutral",
}


def shown(text: str, *, limit: int = 60) -> str:
    """`repr(text)`, cut to about `limit` characters: a reject reason quotes the bad value, and a
    hostile value must not make the manifest huge."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


def check_split_mode(split_mode: str) -> None:
    if split_mode not in SPLIT_MODES:
        raise ConfigError(f"`split_mode` must be one of {SPLIT_MODES}, got {split_mode!r}")


def emotion_from_name(name: str) -> int | None:
    """Emotion index for a folder name such as "happy" or "Happiness"; None when unknown."""
    label = name.strip().lower()
    label = _EMOTION_ALIASES.get(label, label)
    return EMOTION.classes.index(label) if label in EMOTION.classes else None


def hash_fraction(name: str, seed: int) -> float:
    """A number in [0, 1) fixed by (name, seed): the same file lands in the same split every run,
    whatever order files are listed in and whatever else is in the folder."""
    digest = hashlib.sha1(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(name: str, seed: int, *, train: float = 0.8, validation: float = 0.1) -> Split:
    """Seeded train/validation/test (80/10/10 by default) split by file-name hash."""
    u = hash_fraction(name, seed)
    if u < train:
        return "train"
    if u < train + validation:
        return "validation"
    return "test"


def apply_split_mode(split: Split, key: str, *, seed: int, split_mode: str) -> Split:
    """The split of a record whose dataset fixes train/validation(/test) itself.

    "holdout" keeps the official validation set unseen until the end: it becomes test, and a seeded
    10% of train (by key hash) becomes validation for early stopping and tuning. That is how FER2013
    PublicTest figures are reported without having early-stopped on PublicTest.
    """
    if split_mode != "holdout":
        return split
    if split == "validation":
        return "test"
    if split == "train" and hash_fraction(key, seed) < HOLDOUT_VALIDATION_FRACTION:
        return "validation"
    return split


def require_dir(path: Path, *, kind: str) -> None:
    if not path.exists():
        raise DataError(f"{kind} source {path} does not exist; pass an existing folder")
    if not path.is_dir():
        raise DataError(f"{kind} source {path} is not a folder; pass the dataset's root folder")


def iter_files(root: Path) -> Iterator[Path]:
    """Every non-hidden entry under `root` but its real folders, recursively, in sorted (reproducible)
    order: files, and also links and special files, so that a reader rejects those (`read_inside`)
    rather than dropping them unseen. Links to folders are listed, not followed."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue  # .DS_Store, .ipynb_checkpoints and the like are not inputs
        if path.is_symlink() or not path.is_dir():
            yield path


def refuse_path(root: Path, file: Path) -> str | None:
    """Why `file` cannot be an input of the source folder `root`, or None when it can.

    A link may point anywhere on the machine: it is followed only when its target lies inside
    `root` too, so that a source folder never makes a reader read outside it.
    """
    try:
        target = file.resolve(strict=True)
        inside = target.is_relative_to(root.resolve(strict=True))
    except (OSError, RuntimeError) as e:  # a broken link, a link loop
        return f"cannot be resolved ({type(e).__name__}: {e.strerror if isinstance(e, OSError) else e}); remove it"
    if not inside:
        return "a link pointing outside the source folder; copy the file into the folder instead"
    if not target.is_file():
        return "not a regular file (a folder link, a device or a pipe); remove it"
    return None


def read_inside(root: Path, file: Path) -> bytes | str:
    """The content of `file`, or the reason it is refused (see `refuse_path`, or an I/O error)."""
    reason = refuse_path(root, file)
    if reason:
        return reason
    try:
        return file.read_bytes()
    except OSError as e:
        return f"cannot be read ({e.strerror or e}); check its permissions"


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
