"""Held-out faces that also sit, pixel for pixel, in the training split.

FER2013 stores some photos under several rows, across its own Training, PublicTest and PrivateTest
sets. Prepared from the shared data, 257 of the 3,589 PublicTest faces and 196 of the 2,897
validation faces carved from Training have an exact copy among the training faces (UTKFace: 9 test
and 7 validation crops), and a model answers those largely from memory (the shipped one: 79.8%
emotion accuracy on PublicTest's copies against 59.1% on its other faces). A held-out figure that
counts them mixes recall of training faces into generalisation, so `fer-mtl prepare` counts them
and `fer-mtl evaluate` also scores without them; `fer-mtl prepare --drop-training-copies` leaves
the training copies out instead, so the held-out splits stay whole and every face in them is unseen.

A copy is found by the aligned face's bytes: alignment is deterministic, so the same source pixels
give the same face. A near copy (re-cropped, re-encoded, brightened) is not found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fer_model.records import SPLIT_CODES

if TYPE_CHECKING:
    from fer_model.dataset import Dataset


def face_digests(images: Sequence[np.ndarray] | np.ndarray) -> list[bytes]:
    """One 16-byte digest of each face's pixels (equal faces, equal digests), read a face at a time."""
    return [hashlib.blake2b(np.ascontiguousarray(face).tobytes(), digest_size=16).digest() for face in images]


def copies_in(digests: list[bytes], split: np.ndarray, *, of: str, among: str) -> np.ndarray:
    """bool [rows of split `of`]: whether each face of split `of` also occurs in split `among`."""
    codes = np.asarray(split)
    pool = {d for d, code in zip(digests, codes, strict=True) if code == SPLIT_CODES[among]}
    return np.array([d in pool for d, code in zip(digests, codes, strict=True) if code == SPLIT_CODES[of]], dtype=bool)


def overlap_counts(images: np.ndarray, split: np.ndarray) -> dict[str, int]:
    """How many held-out faces have an exact copy in an earlier split (the manifest's `split_overlap`)."""
    digests = face_digests(images)
    pairs = (("validation", "train"), ("test", "train"), ("test", "validation"))
    return {f"{of}_in_{among}": int(copies_in(digests, split, of=of, among=among).sum()) for of, among in pairs}


def copies_of_held_out(digests: list[bytes], split: np.ndarray) -> np.ndarray:
    """bool [all rows]: the training faces that also occur in the validation or the test split."""
    codes = np.asarray(split)
    train = SPLIT_CODES["train"]
    held_out = {d for d, code in zip(digests, codes, strict=True) if code != train}
    return np.array([code == train and d in held_out for d, code in zip(digests, codes, strict=True)], dtype=bool)


def training_copies(dataset: Dataset, split: str) -> np.ndarray:
    """bool [len(dataset.indices(split))]: whether each face of `split` also occurs in the train split."""
    return copies_in(face_digests(dataset.images), dataset.split, of=split, among="train")
