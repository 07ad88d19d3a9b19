"""Sources -> aligned 50x50 faces -> dataset artifact.

Records stream from the readers in chunks of `chunk_size`, each chunk aligned by one `AlignPool`
(worker processes, started once, when `workers` > 1) while the next chunk is read, so raw image
bytes of at most two chunks are held at a time: a 35k-image FER2013 + RAF-DB run keeps the encoded
files of a few thousand images, plus the 2.5 kB aligned face of each kept image.

What happens to each input:
- a reader Reject stays a reject, with the reader's reason;
- an image that cannot be decoded is rejected ("undecodable image: ...");
- a full image (folder source) with no detected face is rejected ("no face found");
- a face crop whose eyes are not found is kept unrotated and counted (`eyes_not_found_kept`).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fer_model import __version__
from fer_model.alignment import AlignConfig, AlignJob, AlignPool, AlignResult, alignment_stats
from fer_model.dataset import write_dataset
from fer_model.errors import ConfigError, DataError
from fer_model.progress import DEFAULT_EVERY_S, Progress
from fer_model.readers import SourceSpec, SplitMode, read_source
from fer_model.readers._common import check_split_mode
from fer_model.records import SPLIT_CODES, SPLITS, Record, Reject
from fer_model.split_overlap import copies_of_held_out, overlap_counts
from fer_model.storage import local_source
from fer_model.tasks import TASK_NAMES

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 2048
# The error `align_batch` reports for a full image in which no face was detected.
_NO_FACE_ERROR = "no face detected"


@dataclass
class _SourceRun:
    """What one source contributed: kept records with their aligned faces, rejects, notes."""

    spec: SourceSpec
    local_path: Path
    progress: Progress  # counts aligned images, logs a line every so often
    records: list[Record] = field(default_factory=list)
    results: list[AlignResult] = field(default_factory=list)  # one per kept record, same order
    all_results: list[AlignResult] = field(default_factory=list)  # one per aligned input
    rejects: list[Reject] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inputs: int = 0
    train_copies_dropped: int | None = None  # None: not asked to drop them

    def summary(self) -> dict[str, Any]:
        splits = Counter(r.split for r in self.records)
        reasons = Counter(r.reason for r in self.rejects)
        dropped = {} if self.train_copies_dropped is None else {"train_copies_dropped": self.train_copies_dropped}
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "path": self.spec.path,
            "inputs": self.inputs,
            "records": len(self.records),
            "rejects": len(self.rejects),
            "splits": {s: splits.get(s, 0) for s in SPLITS},
            "eyes_not_found_kept": sum(1 for r in self.results if not r.eyes_found),
            "reject_reasons": dict(reasons.most_common(10)),
            "notes": self.notes,
            **dropped,
        }


def _unique_names(specs: Sequence[SourceSpec]) -> list[SourceSpec]:
    """Give a second source of the same name (two folders, say) a `-2` suffix, so per-source
    counts and reject lists in the manifest stay apart."""
    seen: Counter[str] = Counter()
    out = []
    for spec in specs:
        seen[spec.name] += 1
        out.append(spec if seen[spec.name] == 1 else replace(spec, name=f"{spec.name}-{seen[spec.name]}"))
    return out


def _collect_chunk(run: _SourceRun, chunk: list[Record], job: AlignJob) -> None:
    """Wait for one chunk's alignment and file its records as kept or rejected."""
    results = job.results(run.progress.advance)
    for record, result in zip(chunk, results, strict=True):
        run.all_results.append(result)
        if result.face is not None:
            run.records.append(replace(record, image=b""))  # drop the encoded bytes, keep labels
            run.results.append(result)
        elif result.error == _NO_FACE_ERROR:
            run.rejects.append(Reject(record.source, record.key, "no face found"))
        else:
            run.rejects.append(Reject(record.source, record.key, f"undecodable image: {result.error}"))


def _read_and_align(
    run: _SourceRun,
    items: Iterable[Record | Reject],
    *,
    pool: AlignPool,
    chunk_size: int,
) -> None:
    """Align the records in chunks, each one read while the workers align the one before.

    Reading is a third of a crop's cost on FER2013 (listing, link checks, file reads); done
    between chunks, it left the workers idle for it.
    """
    chunk: list[Record] = []
    in_flight: tuple[list[Record], AlignJob] | None = None
    for item in items:
        run.inputs += 1
        if isinstance(item, Reject):
            run.rejects.append(item)
            continue
        chunk.append(item)
        if len(chunk) >= chunk_size:
            in_flight = _hand_over(run, chunk, pool=pool, in_flight=in_flight)
            chunk = []
    if chunk:
        in_flight = _hand_over(run, chunk, pool=pool, in_flight=in_flight)
    if in_flight is not None:
        _collect_chunk(run, *in_flight)


def _hand_over(run: _SourceRun, chunk: list[Record], *, pool: AlignPool,
               in_flight: tuple[list[Record], AlignJob] | None) -> tuple[list[Record], AlignJob]:
    """Start aligning `chunk`, then collect the chunk that was in flight: it becomes the one in flight."""
    job = pool.submit([r.image for r in chunk], is_face_crop=[r.is_face_crop for r in chunk])
    if in_flight is not None:
        _collect_chunk(run, *in_flight)
    return chunk, job


def _check_options(
    sources: Sequence[SourceSpec | str], *, workers: int, limit: int | None, chunk_size: int, split_mode: SplitMode,
    progress_every_s: float,
) -> list[SourceSpec]:
    """The sources as uniquely named specs, once every option of `prepare_dataset` is usable."""
    if not sources:
        raise ConfigError("`sources` is empty; pass at least one KIND:PATH source")
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    if limit is not None and limit < 1:
        raise ConfigError(f"`limit` must be >= 1 or None, got {limit}")
    if chunk_size < 1:
        raise ConfigError(f"`chunk_size` must be >= 1, got {chunk_size}")
    if not progress_every_s >= 0:
        raise ConfigError(f"`progress_every_s` must be >= 0 seconds, got {progress_every_s}")
    check_split_mode(split_mode)
    return _unique_names([s if isinstance(s, SourceSpec) else SourceSpec.parse(s) for s in sources])


def _run_source(
    spec: SourceSpec, *, pool: AlignPool, seed: int, split_mode: SplitMode, limit: int | None,
    chunk_size: int, progress_every_s: float,
) -> _SourceRun:
    """Read and align one source; DataError when it yields no usable record."""
    # Readers stream, so a source's size is known only with `limit` (an upper bound, then an ETA).
    progress = Progress(f"{spec.name}: aligned", total=limit, unit="images", every_s=progress_every_s, log=logger)
    run = _SourceRun(spec=spec, local_path=local_source(spec.path), progress=progress)
    items = read_source(replace(spec, path=str(run.local_path)), seed=seed, split_mode=split_mode, notes=run.notes)
    _read_and_align(run, itertools.islice(items, limit), pool=pool, chunk_size=chunk_size)
    run.progress.finish()
    if not run.records:
        top = Counter(r.reason for r in run.rejects).most_common(1)
        why = f"; most common reject: {top[0][0]!r} x{top[0][1]}" if top else ""
        raise DataError(
            f"source {spec.kind}:{spec.path} gave no usable records ({run.inputs} inputs, "
            f"{len(run.rejects)} rejected{why}); check the path and the kind"
        )
    logger.info("%s: %d inputs, %d records, %d rejects", spec.name, run.inputs, len(run.records), len(run.rejects))
    return run


def _arrays(runs: Sequence[_SourceRun]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The kept faces of all sources, in order, as (images, labels per task, split codes)."""
    records = [r for run in runs for r in run.records]
    images = np.stack([r.face for run in runs for r in run.results]).astype(np.uint8, copy=False)
    label_rows = np.array([r.label_vector() for r in records], dtype=np.int8).reshape(len(records), len(TASK_NAMES))
    labels = {task: label_rows[:, i] for i, task in enumerate(TASK_NAMES)}
    split = np.array([SPLIT_CODES[r.split] for r in records], dtype=np.uint8)
    return images, labels, split


def _drop_training_copies(runs: Sequence[_SourceRun], *, near: bool) -> int:
    """Leave out every kept training face that copies a validation or test face, of any source."""
    images, _, split = _arrays(runs)
    copies = copies_of_held_out(images, split, near=near)
    start = 0
    for run in runs:
        mine = copies[start:start + len(run.records)]
        start += len(run.records)
        run.records = [r for r, copy in zip(run.records, mine, strict=True) if not copy]
        run.results = [r for r, copy in zip(run.results, mine, strict=True) if not copy]
        run.train_copies_dropped = int(mine.sum())
    return int(copies.sum())


def _alignment_section(runs: Sequence[_SourceRun], align: AlignConfig) -> dict[str, Any]:
    """The manifest's `alignment`: the settings, and per source what the aligner found."""
    stats = {
        run.spec.name: {
            **alignment_stats(run.all_results, max_angle=align.max_angle),
            "eyes_not_found_kept": sum(1 for r in run.results if r.face_found and not r.eyes_found),
        }
        for run in runs
    }
    return {"config": align.to_dict(), "per_source": stats}


def prepare_dataset(
    *,
    sources: Sequence[SourceSpec | str],
    out_dir: str | os.PathLike[str],
    align: AlignConfig = AlignConfig(),  # noqa: B008 - frozen, so one shared default is safe
    workers: int = 1,
    seed: int = 0,
    split_mode: SplitMode = "official",
    limit: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress_every_s: float = DEFAULT_EVERY_S,
    drop_training_copies: bool = False,
    near_copies: bool = False,
) -> Path:
    """Read every source, align every image, and write one dataset artifact.

    Args:
        sources: `SourceSpec`s or "kind:path" strings; paths may be gs:// URIs.
        out_dir: The dataset artifact folder to write (replaced if it exists).
        align: Alignment settings (recorded in the manifest).
        workers: Alignment processes.
        seed: Seeds the splits that sources do not fix themselves.
        split_mode: "official" or "paper" (see `fer_model.readers.read_source`).
        limit: Read at most this many inputs per source (records and rejects), for quick runs.
        chunk_size: Records aligned per batch; bounds the encoded images held in memory.
        progress_every_s: Seconds between progress lines while a source is aligned (images done,
            rate, and with `limit` an ETA); each source also ends with one.
        drop_training_copies: Leave out the training faces that copy a validation or test face
            (FER2013 repeats photos across its sets; `fer_model.split_overlap`), so that held-out
            figures measure unseen faces while the held-out splits stay whole; each source's
            manifest entry counts them (`train_copies_dropped`). Off: they are kept and counted (`split_overlap`).
        near_copies: Also look for near copies (the same photo re-cropped, re-encoded or re-lit)
            wherever exact copies are looked for: counted, dropped with `drop_training_copies`, and
            left out by `fer-mtl evaluate` (recorded as `prepare.near_copies`). For photos only:
            drawn faces that share a template pass as near copies.

    Returns:
        The artifact folder.

    Raises:
        ConfigError: no sources, bad `workers`, `limit`, `chunk_size` or `split_mode`.
        DataError: a source is malformed as a whole or yields no usable record.
        StorageError: a source path does not exist or cannot be downloaded.
    """
    specs = _check_options(sources, workers=workers, limit=limit, chunk_size=chunk_size, split_mode=split_mode,
                           progress_every_s=progress_every_s)
    started = time.perf_counter()
    # One pool for every chunk of every source: its workers start (and load their models) once.
    with AlignPool(align, workers=workers) as pool:
        runs = [
            _run_source(spec, pool=pool, seed=seed, split_mode=split_mode, limit=limit,
                        chunk_size=chunk_size, progress_every_s=progress_every_s)
            for spec in specs
        ]
    if drop_training_copies:
        dropped = _drop_training_copies(runs, near=near_copies)
        logger.info("left out %d training faces that copy validation or test faces", dropped)
    images, labels, split = _arrays(runs)
    rejects = [r.to_dict() for run in runs for r in run.rejects]
    inputs = sum(run.inputs for run in runs)
    overlap = overlap_counts(images, split, near=near_copies)
    out = write_dataset(
        out_dir,
        images=images,
        labels=labels,
        split=split,
        sources=[run.summary() for run in runs],
        alignment=_alignment_section(runs, align),
        rejects=rejects,
        extra={
            # `near_copies` only when asked: a dataset prepared without it keeps its manifest, byte for byte.
            "prepare": {"seed": seed, "split_mode": split_mode, "limit": limit, "library_version": __version__,
                        **({"near_copies": True} if near_copies else {})},
            "num_inputs": inputs,
            "split_overlap": overlap,
        },
    )
    elapsed = time.perf_counter() - started
    per_split = " / ".join(f"{s} {int((split == c).sum())}" for s, c in SPLIT_CODES.items())
    logger.info(
        "prepared %d of %d inputs from %d source(s) (%s), %d rejected, eyes found %d, %.1fs (%.0f inputs/s) -> %s",
        len(split), inputs, len(runs), per_split, len(rejects), sum(r.eyes_found for run in runs for r in run.results),
        elapsed, inputs / max(elapsed, 1e-9), out,
    )  # fmt: skip
    if near_copies:
        near = {of: overlap[f"{of}_near_train"] for of in ("validation", "test")}
        kinds = f"exact copies, and {near['validation']} and {near['test']} more are near copies (the same photo "
        kinds += "re-cropped, re-encoded or re-lit)"
    else:
        kinds, near = "exact copies", {"validation": 0, "test": 0}
    if overlap["validation_in_train"] + overlap["test_in_train"] + sum(near.values()):
        logger.warning(
            "%d validation and %d test faces are %s of training faces: a model can answer those from memory; "
            "`fer-mtl evaluate` also scores without them, `--drop-training-copies` leaves the training copies out",
            overlap["validation_in_train"], overlap["test_in_train"], kinds,
        )  # fmt: skip
    return out
