"""What readers produce: one `Record` per usable input, one `Reject` per unusable one.

Readers never drop an input silently: every input becomes exactly one of the two.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fer_model.tasks import MISSING, TASK_NAMES

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
#: Code stored in the dataset artifact's split.npy for each split name.
SPLIT_CODES: dict[str, int] = {name: code for code, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class Record:
    """One input image with its labels.

    Attributes:
        source: Name of the source it came from (e.g. "fer2013", "rafdb", "utkface").
        key: Stable identifier inside the source (row number, file name), used in reject lists.
        image: A decoded uint8 array (HxW gray or HxWx3 BGR) or the encoded file bytes; bytes are
            decoded later, in the alignment worker, so decoding is parallel too.
        labels: Class index per task name; tasks absent from the mapping are `MISSING`.
        split: Which split the record belongs to.
        is_face_crop: True when the image is already a face crop (FER2013, RAF-DB aligned,
            UTKFace): alignment then skips face detection but still levels the eyes.
    """

    source: str
    key: str
    image: np.ndarray | bytes
    labels: Mapping[str, int]
    split: Split
    is_face_crop: bool = True

    def label(self, task: str) -> int:
        return int(self.labels.get(task, MISSING))

    def label_vector(self) -> tuple[int, ...]:
        """Labels in `TASK_NAMES` order, `MISSING` where absent."""
        return tuple(self.label(t) for t in TASK_NAMES)


@dataclass(frozen=True)
class Reject:
    """An input that could not be used, and why (written to the dataset manifest)."""

    source: str
    key: str
    reason: str
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "key": self.key, "reason": self.reason, **self.extra}
