"""FER2013 in the Kaggle folder layout: `{train,validation,test}/<emotion>/Training_<n>.jpg`.

The split comes from the folder. File names carrying a FER2013 usage prefix (`Training_`,
`PublicTest_`, `PrivateTest_`) must agree with their folder: a disagreement means the folders were
mixed up, and the file is rejected rather than trained or tested on in the wrong split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from fer_model.errors import DataError
from fer_model.readers.folder import has_split_folders, read_emotion_folders
from fer_model.records import Record, Reject, Split

logger = logging.getLogger(__name__)

PREFIX_TO_SPLIT: dict[str, Split] = {"Training_": "train", "PublicTest_": "validation", "PrivateTest_": "test"}


def _prefix_agrees(file: Path, split: Split) -> str | None:
    for prefix, expected in PREFIX_TO_SPLIT.items():
        if file.name.startswith(prefix) and expected != split:
            return f"file name prefix {prefix!r} means split {expected!r} but the file is in the {split!r} folder"
    return None


def read_fer2013_folder(
    path: Path,
    *,
    source: str = "fer2013",
    seed: int = 0,
    split_mode: str = "official",
    notes: list[str] | None = None,
) -> Iterator[Record | Reject]:
    """Yield one Record (48x48 JPEG bytes, emotion only, face crop) or Reject per file.

    Raises:
        DataError: the folder has none of the train/validation/test folders.
    """
    del notes  # the split comes from the folders (and the split mode)
    if path.is_dir() and not has_split_folders(path):
        raise DataError(f"FER2013 folder {path} has no train/, validation/ or test/ folder")
    yield from read_emotion_folders(
        path,
        source=source,
        kind="fer2013-folder",
        seed=seed,
        split_folders=True,
        is_face_crop=True,
        check=_prefix_agrees,
        split_mode=split_mode,
    )
