"""Held-out faces that copy a training face: exactly (the same pixels) or nearly (the same photo).

FER2013 stores some photos under several rows, across its own Training, PublicTest and PrivateTest
sets, some pixel for pixel and some re-cropped, re-encoded or re-lit. Prepared from the shared data,
257 of the 3,589 PublicTest faces have an exact copy among the training faces and 180 more a near
one (the validation faces carved from Training: 196 and 146 of 2,897; UTKFace test crops: 9 and 13
of 798). A model answers those largely from memory: the shipped one scores 79.8% emotion accuracy
on PublicTest's exact copies, 67.2% on its near ones and 58.6% on the faces with neither. A held-out
figure that counts them mixes recall of training faces into generalisation, so `fer-mtl prepare`
counts them, `fer-mtl evaluate` also scores without them, and `fer-mtl prepare
--drop-training-copies` leaves the training copies out instead, so the held-out splits stay whole
and every face in them is unseen.

An exact copy is found by the aligned face's bytes: alignment is deterministic, so the same source
pixels give the same face. A near copy takes two tests, because each alone fails on well-aligned
faces: a 64-bit DCT hash of the face's coarse layout puts many frontal UTKFace crops of different
people within 6 bits of each other, and the correlation of raw pixels, dominated by that same
layout, reaches 0.9 between strangers. So the hash only picks candidates (`NEAR_HASH_BITS`), and a
candidate must share the photo's fine detail: the high-pass pixels (the face minus a blurred face,
which drops lighting and layout) must correlate by `NEAR_DETAIL_CORRELATION`. Both were set by eye on the
shared data's pairs (`experiments/real_faces/near_copies.py --montage`): every pair shown above the
threshold was the same photo; below it most still are, but strangers appear among them. So the
near count is a floor: it misses some copies rather than call strangers the same photo.

Near copies are looked for only when asked (`fer-mtl prepare --near-copies`, recorded in the
manifest's `prepare.near_copies`, which `fer-mtl evaluate` follows): both tests are calibrated on
photos, and drawn faces defeat them. The synthetic sample's faces, drawn from one template, share
every stroke at the same place, so different faces there pass as the same photo (14 of its 90 test
faces would); no pixel statistic tried (raw, high-pass at two scales, per block) told them apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from fer_model.records import SPLIT_CODES

if TYPE_CHECKING:
    from fer_model.dataset import Dataset

#: Candidates for a near copy differ in at most this many of the 64 bits of their DCT hashes.
NEAR_HASH_BITS = 10
#: A candidate is a near copy when the two faces' high-pass pixels correlate at least this much.
NEAR_DETAIL_CORRELATION = 0.65
#: Gaussian sigma (pixels of the 50x50 face) of the blur subtracted to keep a face's fine detail.
_DETAIL_SIGMA = 2.0
#: Held-out faces hashed against the pool at once: bounds the distance block in memory.
_CHUNK = 512


def face_digests(images: Sequence[np.ndarray] | np.ndarray) -> list[bytes]:
    """One 16-byte digest of each face's pixels (equal faces, equal digests), read a face at a time."""
    return [hashlib.blake2b(np.ascontiguousarray(face).tobytes(), digest_size=16).digest() for face in images]


def perceptual_hashes(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """float32 [N, 64] of +-1: each face's 64-bit DCT hash (the face at 32x32, its 8x8 lowest
    frequencies above their median). Two hashes differ in (64 - a @ b) / 2 bits."""
    low = np.empty((len(images), 64), dtype=np.float32)
    for i, face in enumerate(images):
        small = cv2.resize(np.asarray(face, dtype=np.float32), (32, 32), interpolation=cv2.INTER_AREA)
        low[i] = cv2.dct(small)[:8, :8].ravel()
    return np.where(low > np.median(low, axis=1, keepdims=True), 1.0, -1.0).astype(np.float32)


def hashes_within(queries: np.ndarray, pool: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(query index, pool index) of every pair of +-1 hashes that differ in at most `bits` bits.

    One matrix product counts them all: two +-1 hashes of 64 bits agree in (64 + a @ b) / 2.
    """
    bits_apart = (64.0 - queries @ pool.T) / 2.0
    return np.nonzero(bits_apart <= bits + 0.5)


def _details(images: np.ndarray) -> np.ndarray:
    """float32 [N, pixels]: each face minus its blur, centred and scaled to unit length."""
    faces = images.astype(np.float32)
    high = np.stack([f - cv2.GaussianBlur(f, (0, 0), _DETAIL_SIGMA) for f in faces]).reshape(len(faces), -1)
    high -= high.mean(axis=1, keepdims=True)
    return high / np.maximum(np.linalg.norm(high, axis=1, keepdims=True), 1e-6)


@dataclass(frozen=True)
class Copies:
    """Which faces of one group copy some face of another, as bool masks over the first group.

    Attributes:
        exact: The same pixels occur in the other group.
        near: Not exact, but the same photo occurs there re-cropped, re-encoded or re-lit; None
            when near copies were not looked for.
    """

    exact: np.ndarray
    near: np.ndarray | None = None

    @property
    def either(self) -> np.ndarray:
        return self.exact if self.near is None else self.exact | self.near


class FaceIndex:
    """The faces of one dataset, fingerprinted once, to ask which faces of one group copy another's."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = images
        self._digests = face_digests(images)
        self._hash_cache: np.ndarray | None = None
        self._detail_cache: np.ndarray | None = None
        self._detail_done = np.zeros(len(images), dtype=bool)

    @property
    def _hashes(self) -> np.ndarray:
        # Only near copies need them: exact ones are found by the digests alone.
        if self._hash_cache is None:
            self._hash_cache = perceptual_hashes(self._images)
        return self._hash_cache

    def _details_of(self, faces: np.ndarray) -> np.ndarray:
        """The fine detail of the faces at rows `faces`, each computed once per index: a training face
        is a candidate for many held-out faces, across chunks and splits."""
        if self._detail_cache is None:
            # Rows never asked for are never written, so their pages are never allocated.
            self._detail_cache = np.empty((len(self._images), int(np.prod(self._images.shape[1:]))), np.float32)
        todo = faces[~self._detail_done[faces]]
        if todo.size:
            self._detail_cache[todo] = _details(self._images[todo])
            self._detail_done[todo] = True
        return self._detail_cache

    def candidates(self, of: np.ndarray, among: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every pair (row of `of`, row of `among`) whose hashes are within `NEAR_HASH_BITS`, with the
        correlation of the two faces' fine detail: three arrays of equal length."""
        of, among = np.asarray(of, dtype=np.int64), np.asarray(among, dtype=np.int64)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for start in range(0, len(of) if len(among) else 0, _CHUNK):
            rows = of[start:start + _CHUNK]
            query, candidate = hashes_within(self._hashes[rows], self._hashes[among], NEAR_HASH_BITS)
            if not query.size:
                continue
            pairs = rows[query], among[candidate]
            detail = self._details_of(np.unique(np.concatenate(pairs)))
            found.append((*pairs, np.einsum("ij,ij->i", detail[pairs[0]], detail[pairs[1]])))
        if not found:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
        return tuple(np.concatenate(column) for column in zip(*found, strict=True))  # type: ignore[return-value]

    def copies(self, of: np.ndarray, among: np.ndarray, *, near: bool) -> Copies:
        """Copies of the faces at rows `of` (int indices) among the faces at rows `among`; near
        copies only when `near`."""
        of = np.asarray(of, dtype=np.int64)
        pool = {self._digests[i] for i in among}
        exact = np.array([self._digests[i] in pool for i in of], dtype=bool)
        if not near:
            return Copies(exact=exact)
        query, _, correlation = self.candidates(of, among)
        close = np.isin(of, query[correlation >= NEAR_DETAIL_CORRELATION])
        return Copies(exact=exact, near=close & ~exact)

    def split_copies(self, split: np.ndarray, *, of: str, among: str, near: bool) -> Copies:
        """Copies of split `of`'s faces (masks over its rows, in order) among split `among`'s."""
        codes = np.asarray(split)
        return self.copies(np.flatnonzero(codes == SPLIT_CODES[of]), np.flatnonzero(codes == SPLIT_CODES[among]),
                           near=near)


def overlap_counts(images: np.ndarray, split: np.ndarray, *, near: bool) -> dict[str, int]:
    """How many held-out faces copy a face of an earlier split (the manifest's `split_overlap`):
    `{of}_in_{among}` counts exact copies and, when `near`, `{of}_near_{among}` near ones."""
    index = FaceIndex(images)
    counts: dict[str, int] = {}
    for of, among in (("validation", "train"), ("test", "train"), ("test", "validation")):
        found = index.split_copies(split, of=of, among=among, near=near)
        counts[f"{of}_in_{among}"] = int(found.exact.sum())
        if found.near is not None:
            counts[f"{of}_near_{among}"] = int(found.near.sum())
    return counts


def copies_of_held_out(images: np.ndarray, split: np.ndarray, *, near: bool) -> np.ndarray:
    """bool [all rows]: the training faces that copy a validation or test face (exactly, or also
    nearly when `near`)."""
    codes = np.asarray(split)
    train = np.flatnonzero(codes == SPLIT_CODES["train"])
    marks = np.zeros(len(codes), dtype=bool)
    held_out = np.flatnonzero(codes != SPLIT_CODES["train"])
    marks[train] = FaceIndex(images).copies(train, held_out, near=near).either
    return marks


def looks_for_near_copies(manifest: Mapping[str, Any]) -> bool:
    """Whether the dataset was prepared with `--near-copies` (older manifests: no)."""
    return bool((manifest.get("prepare") or {}).get("near_copies", False))


def training_copies(dataset: Dataset, split: str) -> Copies:
    """Which faces of `split` (masks over `dataset.indices(split)`) copy a face of the train split;
    near copies too when the dataset was prepared looking for them."""
    return FaceIndex(np.asarray(dataset.images)).split_copies(dataset.split, of=split, among="train",
                                                              near=looks_for_near_copies(dataset.manifest))
