"""A folder of full images sorted by emotion: `<root>/<emotion>/*.jpg` or
`<root>/{train,validation,test}/<emotion>/*.jpg`.

Images are full pictures (`is_face_crop=False`), so alignment detects the face. Without split
folders, each file's split is drawn from a seeded hash of its path (80/10/10).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

from fer_model.readers._common import (
    apply_split_mode,
    emotion_from_name,
    hash_split,
    is_image_name,
    iter_files,
    read_inside,
    require_dir,
)
from fer_model.records import SPLITS, Record, Reject, Split
from fer_model.tasks import EMOTION

logger = logging.getLogger(__name__)

#: Optional extra check on (file, split): returns a reject reason or None.
FileCheck = Callable[[Path, Split], str | None]


def has_split_folders(root: Path) -> bool:
    return any((root / split).is_dir() for split in SPLITS)


def read_emotion_folders(
    root: Path,
    *,
    source: str,
    kind: str,
    seed: int,
    split_folders: bool,
    is_face_crop: bool,
    check: FileCheck | None = None,
    split_mode: str = "official",
) -> Iterator[Record | Reject]:
    """One Record (file bytes, emotion) or Reject per non-hidden file under `root`, sorted by path."""
    require_dir(root, kind=kind)
    layout = "<split>/<emotion>/<file>" if split_folders else "<emotion>/<file>"
    for file in iter_files(root):
        rel = file.relative_to(root)
        key = rel.as_posix()
        parts = rel.parts
        if len(parts) != (3 if split_folders else 2) or (split_folders and parts[0] not in SPLITS):
            yield Reject(source, key, f"not in the {layout} layout (splits: {', '.join(SPLITS)})")
            continue
        folder_split: Split = parts[0] if split_folders else hash_split(key, seed)  # type: ignore[assignment]
        emotion_dir = parts[-2]
        emotion = emotion_from_name(emotion_dir)
        if emotion is None:
            yield Reject(source, key, f"unknown emotion folder {emotion_dir!r}; expected one of {EMOTION.classes}")
            continue
        if not is_image_name(file):
            yield Reject(source, key, "not an image file (expected .jpg, .jpeg or .png)")
            continue
        # File-name checks see the folder's split; the split mode remaps it afterwards.
        reason = check(file, folder_split) if check else None
        if reason:
            yield Reject(source, key, reason)
            continue
        split = apply_split_mode(folder_split, key, seed=seed, split_mode=split_mode) if split_folders else folder_split
        data = read_inside(root, file)
        if isinstance(data, str):
            yield Reject(source, key, data)
            continue
        yield Record(source, key, data, {"emotion": emotion}, split, is_face_crop=is_face_crop)


def read_folder(
    path: Path,
    *,
    source: str = "folder",
    seed: int = 0,
    split_mode: str = "official",
    notes: list[str] | None = None,
) -> Iterator[Record | Reject]:
    """Full images by emotion folder; splits from `train/validation/test` folders when present,
    else from a seeded file-name hash. Unknown emotion folders reject each of their files."""
    del split_mode  # the split comes from the folders or the hash
    split_folders = path.is_dir() and has_split_folders(path)
    if notes is not None and path.is_dir():
        notes.append("split from train/validation/test folders" if split_folders else f"split by hash, seed {seed}")
    yield from read_emotion_folders(
        path, source=source, kind="folder", seed=seed, split_folders=split_folders, is_face_crop=False
    )
