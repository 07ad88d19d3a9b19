"""The dataset artifact (format version 2; version 1 still loads): one writer, one loader.

A folder holding
- images.npy: uint8 [N, S, S] aligned grayscale faces (memory-mappable),
- labels.npz: one int8 [N] array per task, -1 where the sample has no label,
- split.npy: uint8 [N], 0 train / 1 validation / 2 test,
- soft_labels.npz (version 2, optional): one float32 [N, classes] array of teacher probabilities
  per taught task, NaN rows where no teacher label was kept (`fer_model.teachers` writes them),
- manifest.json: format, sizes, tasks, counts, alignment statistics, rejects, array hashes and,
  with soft labels, their provenance under `soft_labels` (teacher, temperature, faces labelled).
Version 2 only added the optional soft labels, so a version 1 artifact loads as one without them.
It is written under a temporary name and renamed into place, so a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fer_model._atomic import atomic_folder
from fer_model.errors import ArtifactError, ConfigError
from fer_model.records import SPLIT_CODES, SPLITS
from fer_model.tasks import MISSING, TASK_NAMES, TASKS

logger = logging.getLogger(__name__)

FORMAT_NAME = "fer-mtl-dataset"
FORMAT_VERSION = 2
#: Versions `load_dataset` reads: 1 is 2 without soft labels.
READABLE_VERSIONS = (1, 2)
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npz"
SPLIT_FILE = "split.npy"
SOFT_LABELS_FILE = "soft_labels.npz"
MANIFEST_FILE = "manifest.json"
_ARRAY_FILES = (IMAGES_FILE, LABELS_FILE, SPLIT_FILE)
#: Manifest fields `write_dataset` fills from its arguments; a copy of an artifact carries over the others.
WRITER_FIELDS = frozenset({"format", "format_version", "image_size", "num_samples", "tasks", "splits", "counts",
                           "sha256", "sources", "alignment", "rejects", "num_rejects", "soft_labels"})
#: How far a soft-label row's sum may stray from 1 (float32 rounding of tempered probabilities).
_ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset artifact.

    Attributes:
        images: uint8 [N, S, S] (memory-mapped when loaded with `mmap=True`).
        labels: task name -> int8 [N], `MISSING` (-1) where unlabelled.
        split: uint8 [N] split codes (see `fer_model.records.SPLIT_CODES`).
        manifest: The parsed manifest.json.
        path: Where it was loaded from (None for an in-memory dataset).
        soft_labels: task -> float32 [N, classes] teacher probabilities, NaN rows where none; only
            the taught tasks (their provenance is `manifest["soft_labels"][task]`).
    """

    images: np.ndarray
    labels: Mapping[str, np.ndarray]
    split: np.ndarray
    manifest: Mapping[str, Any]
    path: Path | None = None
    soft_labels: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def indices(self, split: str) -> np.ndarray:
        """Indices of the samples in `split` ("train", "validation" or "test")."""
        if split not in SPLIT_CODES:
            raise ConfigError(f"unknown split {split!r}; pass one of {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLIT_CODES[split])

    def subset(self, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(images, labels) of one split, loaded into memory."""
        idx = self.indices(split)
        return np.asarray(self.images[idx]), {t: np.asarray(a[idx]) for t, a in self.labels.items()}

    def soft_subset(self, split: str) -> dict[str, np.ndarray]:
        """task -> float32 [n, classes] teacher probabilities of one split (NaN rows: no teacher label)."""
        idx = self.indices(split)
        return {t: np.asarray(a[idx], dtype=np.float32) for t, a in self.soft_labels.items()}

    @property
    def manifest_sha256(self) -> str:
        """sha256 of manifest.json as written (identifies this exact dataset)."""
        return str(self.manifest.get("_sha256", ""))

    def split_sha256(self, split: str) -> str:
        """sha256 of one split's faces and true labels, row by row: all that scoring the split reads.

        The manifest hash changes with anything the manifest records (source paths, a teacher's
        folder and the time it ran, the other splits); this one changes only when the scored faces or
        their labels do, so a rebuild, a taught copy or a dataset with more training faces still
        holds the same test set.
        """
        idx = self.indices(split)
        digest = hashlib.sha256(f"{FORMAT_NAME} split faces+labels v1 {idx.size}x{self.images.shape[1]}\n".encode())
        digest.update(np.ascontiguousarray(self.images[idx], dtype=np.uint8).tobytes())
        for task in TASK_NAMES:
            digest.update(task.encode())
            digest.update(np.ascontiguousarray(self.labels[task][idx], dtype=np.int8).tobytes())
        return digest.hexdigest()


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _counts(labels: Mapping[str, np.ndarray], split: np.ndarray) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for split_name, code in SPLIT_CODES.items():
        in_split = split == code
        per_task: dict[str, Any] = {}
        for task in TASKS:
            values = labels[task.name][in_split]
            per_task[task.name] = {
                "labelled": int((values != MISSING).sum()),
                "unlabelled": int((values == MISSING).sum()),
                "per_class": {c: int((values == i).sum()) for i, c in enumerate(task.classes)},
            }
        counts[split_name] = {"total": int(in_split.sum()), "tasks": per_task}
    return counts


def write_dataset(
    out_dir: str | os.PathLike[str],
    *,
    images: np.ndarray,
    labels: Mapping[str, np.ndarray],
    split: np.ndarray,
    sources: list[dict[str, Any]] | None = None,
    alignment: Mapping[str, Any] | None = None,
    rejects: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
    soft_labels: Mapping[str, np.ndarray] | None = None,
    soft_label_provenance: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a dataset artifact atomically and return its path.

    Args:
        out_dir: Folder to create (replaced if it exists).
        images: uint8 [N, S, S].
        labels: One int-like [N] array per task in `TASK_NAMES`; values in [-1, num_classes).
        split: [N] split codes.
        sources: Descriptions of the inputs (kind, path, counts) for the manifest.
        alignment: Alignment settings and statistics for the manifest.
        rejects: Every rejected input with its reason.
        extra: Further manifest fields.
        soft_labels: Optional task -> [N, classes] teacher probabilities, NaN rows where a face has
            no teacher label; each row sums to 1.
        soft_label_provenance: task -> where each task's soft labels came from (teacher, temperature,
            ...), required for every task in `soft_labels`; the labelled count per split is added.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ArtifactError(f"images must be uint8 [N, S, S], got {images.dtype} {images.shape}")
    n = images.shape[0]
    split = np.asarray(split, dtype=np.uint8)
    if split.shape != (n,) or (split >= len(SPLITS)).any():
        raise ArtifactError(f"split must be [N={n}] codes in 0..{len(SPLITS) - 1}, got shape {split.shape}")
    checked: dict[str, np.ndarray] = {}
    for task in TASKS:
        if task.name not in labels:
            raise ArtifactError(f"labels lack task {task.name!r}; pass -1 arrays for unlabelled tasks")
        values = np.asarray(labels[task.name])
        if values.shape != (n,):
            raise ArtifactError(f"labels[{task.name!r}] must have shape ({n},), got {values.shape}")
        if ((values < MISSING) | (values >= task.num_classes)).any():
            raise ArtifactError(f"labels[{task.name!r}] has values outside -1..{task.num_classes - 1}")
        checked[task.name] = values.astype(np.int8)
    soft = _checked_soft_labels(soft_labels or {}, n=n)
    provenance = _soft_provenance(soft, soft_label_provenance or {}, split=split)

    out = Path(out_dir)
    with atomic_folder(out) as tmp:
        np.save(tmp / IMAGES_FILE, images)
        np.savez(tmp / LABELS_FILE, **checked)
        np.save(tmp / SPLIT_FILE, split)
        array_files = list(_ARRAY_FILES)
        if soft:
            np.savez(tmp / SOFT_LABELS_FILE, **soft)
            array_files.append(SOFT_LABELS_FILE)
        manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "image_size": int(images.shape[1]),
            "num_samples": int(n),
            "tasks": {t.name: list(t.classes) for t in TASKS},
            "splits": list(SPLITS),
            "sources": sources or [],
            "counts": _counts(checked, split),
            "alignment": dict(alignment or {}),
            "rejects": rejects or [],
            "num_rejects": len(rejects or []),
            "sha256": {name: sha256_file(tmp / name) for name in array_files},
            **dict(extra or {}),
        }
        if soft:
            manifest["soft_labels"] = provenance
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    logger.info("wrote dataset artifact %s (%d samples, %d rejects)", out, n, len(rejects or []))
    return out


def _checked_soft_labels(soft_labels: Mapping[str, np.ndarray], *, n: int) -> dict[str, np.ndarray]:
    """The soft labels as float32, after checking tasks, shapes and that each kept row is a distribution."""
    checked: dict[str, np.ndarray] = {}
    for name, values in soft_labels.items():
        if name not in TASK_NAMES:
            raise ArtifactError(f"soft_labels has unknown task {name!r}; expected some of {', '.join(TASK_NAMES)}")
        classes = TASKS[TASK_NAMES.index(name)].num_classes
        array = np.asarray(values, dtype=np.float32)
        if array.shape != (n, classes):
            raise ArtifactError(f"soft_labels[{name!r}] must have shape ({n}, {classes}), got {array.shape}")
        kept = ~np.isnan(array).any(axis=1)
        rows = array[kept]
        if ((rows < 0) | (rows > 1)).any() or (np.abs(rows.sum(axis=1) - 1) > _ROW_SUM_TOLERANCE).any():
            raise ArtifactError(f"soft_labels[{name!r}] has rows that are not probabilities summing to 1; "
                                "pass each face's class probabilities, or a NaN row where it has no teacher label")
        array[~kept] = np.nan
        checked[name] = array
    return checked


def _soft_provenance(soft: Mapping[str, np.ndarray], provenance: Mapping[str, Mapping[str, Any]], *,
                     split: np.ndarray) -> dict[str, Any]:
    """Each task's provenance with the faces it labels counted per split (a task without one is an error)."""
    missing = sorted(set(soft) - set(provenance))
    if missing:
        raise ArtifactError(f"soft labels of {missing} come without provenance; pass soft_label_provenance "
                            "naming the teacher and temperature that made them")
    out: dict[str, Any] = {}
    for name, array in soft.items():
        kept = ~np.isnan(array).any(axis=1)
        per_split = {s: int((kept & (split == code)).sum()) for s, code in SPLIT_CODES.items()}
        out[name] = {**dict(provenance[name]), "labelled_per_split": per_split}
    return out


def load_dataset(path: str | os.PathLike[str], *, mmap: bool = True, verify: bool = True) -> Dataset:
    """Load a dataset artifact, checking its format version and (by default) its array hashes.

    Raises:
        ArtifactError: naming the folder and what is wrong (missing file, other version, bad hash).
    """
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{root} is not a dataset artifact: {MANIFEST_FILE} is missing (run `fer-mtl prepare`)")
    try:
        raw = manifest_path.read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{manifest_path} cannot be parsed: {e}") from e
    if manifest.get("format") != FORMAT_NAME:
        raise ArtifactError(f"{root} is not a {FORMAT_NAME} artifact (format={manifest.get('format')!r})")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ArtifactError(
            f"{root} has dataset format version {manifest.get('format_version')}, this fer-mtl reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}; re-run `fer-mtl prepare`"
        )
    soft_tasks = sorted(manifest.get("soft_labels") or {})
    for name in (*_ARRAY_FILES, *([SOFT_LABELS_FILE] if soft_tasks else [])):
        file = root / name
        if not file.is_file():
            raise ArtifactError(f"{root} is incomplete: {name} is missing")
        if verify:
            expected = manifest.get("sha256", {}).get(name)
            actual = sha256_file(file)
            if expected != actual:
                raise ArtifactError(
                    f"{file} fails its hash check (manifest says {expected}, file is {actual}): "
                    "the artifact was modified or truncated; re-run `fer-mtl prepare`"
                )
    try:
        images = np.load(root / IMAGES_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
        with np.load(root / LABELS_FILE, allow_pickle=False) as npz:
            labels = {t: npz[t] for t in TASK_NAMES}
        split = np.load(root / SPLIT_FILE, allow_pickle=False)
        soft: dict[str, np.ndarray] = {}
        if soft_tasks:
            with np.load(root / SOFT_LABELS_FILE, allow_pickle=False) as npz:
                soft = {t: npz[t] for t in soft_tasks}
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{root} has an unreadable array file: {e}") from e
    manifest["_sha256"] = hashlib.sha256(raw).hexdigest()
    return Dataset(images=images, labels=labels, split=split, manifest=manifest, path=root, soft_labels=soft)


def alignment_settings(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The alignment settings recorded in a dataset manifest (its `alignment.config` if present)."""
    alignment = manifest.get("alignment") or {}
    for key in ("config", "settings"):
        if isinstance(alignment.get(key), Mapping):
            return dict(alignment[key])
    return dict(alignment)
