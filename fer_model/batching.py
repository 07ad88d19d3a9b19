"""Seeded training batches over in-memory arrays: plain shuffling, or a fixed share from each labelled pool.

When sources label different tasks (FER2013 emotion, UTKFace gender/race/age), plain shuffling
gives emotion only its fraction of each batch. Balanced batches group the training samples by
which tasks they are labelled for and draw a fixed share of every batch from each group, with as
many steps per epoch as single-task training on the monitored task would take.

Batch `i` of epoch `e` is a pure function of (seed, e, i), so a run resumed at epoch `e` sees the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from fer_model.errors import ConfigError
from fer_model.tasks import MISSING


def labelled_pools(labels: Mapping[str, np.ndarray], tasks: Sequence[str]) -> dict[tuple[str, ...], np.ndarray]:
    """Sample indices grouped by the tasks they are labelled for (unlabelled samples dropped).

    A sample labelled for a strict subset of another group's tasks joins the largest such group: a
    source with a few missing labels (UTKFace faces without a race) stays one pool instead of
    splitting off a small pool that would take an equal share of every batch.
    """
    labelled = np.stack([np.asarray(labels[t]) != MISSING for t in tasks], axis=1)
    rows, inverse, counts = np.unique(labelled, axis=0, return_inverse=True, return_counts=True)
    inverse = np.ravel(inverse)

    def contains(big: np.ndarray, small: np.ndarray) -> bool:
        return bool(np.all(big >= small))

    maximal = [i for i, row in enumerate(rows)
               if row.any() and not any(contains(o, row) and o.sum() > row.sum() for o in rows)]
    pools: dict[tuple[str, ...], np.ndarray] = {}
    for i in maximal:
        key = tuple(t for t, on in zip(tasks, rows[i], strict=True) if on)
        pools[key] = np.zeros(0, dtype=np.int64)
    for i, row in enumerate(rows):
        if not row.any():
            continue
        home = max((j for j in maximal if contains(rows[j], row)), key=lambda j: counts[j])
        key = tuple(t for t, on in zip(tasks, rows[home], strict=True) if on)
        pools[key] = np.concatenate([pools[key], np.flatnonzero(inverse == i)])
    return {key: np.sort(members) for key, members in sorted(pools.items())}


def equal_shares(batch_size: int, pools: int) -> list[int]:
    """`batch_size` split as evenly as possible over `pools` (the first ones take the remainder)."""
    if pools > batch_size:
        raise ConfigError(f"`batch_size` {batch_size} is smaller than the {pools} labelled pools; "
                          f"use a batch of at least {pools} for balanced batches")
    base, extra = divmod(batch_size, pools)
    return [base + (k < extra) for k in range(pools)]


class BatchPlan:
    """Which sample indices make batch `step` of `epoch`.

    Args:
        num_samples: Training samples (plain plan) - ignored when `pools` is given.
        batch_size: Samples per batch.
        seed: Seeds every permutation.
        pools: Balanced plan: index arrays, each drawn from in its own endless seeded shuffle.
        steps_per_epoch: Balanced plan only: batches per epoch.
    """

    def __init__(self, *, num_samples: int, batch_size: int, seed: int,
                 pools: Sequence[np.ndarray] | None = None, steps_per_epoch: int | None = None) -> None:
        self.batch_size = batch_size
        self.seed = seed
        self.pools = [np.asarray(p, dtype=np.int64) for p in pools] if pools else None
        if self.pools is None:
            self.num_samples = num_samples
            self.steps_per_epoch = math.ceil(num_samples / batch_size)
            self.shares: list[int] = []
        else:
            if any(p.size == 0 for p in self.pools):
                raise ConfigError("every balanced-batch pool needs at least one sample")
            self.shares = equal_shares(batch_size, len(self.pools))
            self.steps_per_epoch = int(steps_per_epoch or 1)

    def indices(self, epoch: int, step: int) -> np.ndarray:
        if self.pools is None:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_samples)
            return order[step * self.batch_size:(step + 1) * self.batch_size]
        first = epoch * self.steps_per_epoch + step
        parts = [self._stream(k, first * share, share) for k, share in enumerate(self.shares)]
        return np.concatenate(parts)

    def _stream(self, pool: int, start: int, count: int) -> np.ndarray:
        """Items start..start+count of pool `pool`'s endless sequence of seeded permutations."""
        members = self.pools[pool]
        n = members.size
        out = []
        position = start
        while len(out) < count:
            cycle, offset = divmod(position, n)
            order = np.random.default_rng([self.seed, pool, cycle]).permutation(n)
            take = order[offset:offset + count - len(out)]
            out.extend(members[take].tolist())
            position += take.size
        return np.asarray(out, dtype=np.int64)


def plan_batches(labels: Mapping[str, np.ndarray], *, tasks: Sequence[str], monitor_task: str, batch_size: int,
                 seed: int, balanced: bool) -> BatchPlan:
    """A plain plan over every sample, or a balanced one with as many steps as `monitor_task`'s labels need."""
    num_samples = len(next(iter(labels.values())))
    if not balanced:
        return BatchPlan(num_samples=num_samples, batch_size=batch_size, seed=seed)
    pools = labelled_pools(labels, tasks)
    labelled = int(np.sum(np.asarray(labels[monitor_task]) != MISSING))
    steps = math.ceil(max(labelled, 1) / batch_size)
    return BatchPlan(num_samples=num_samples, batch_size=batch_size, seed=seed, pools=list(pools.values()),
                     steps_per_epoch=steps)


class PlannedBatches(keras.utils.PyDataset):
    """A Keras dataset serving `plan`'s batches of (images, {task: labels}); `epoch` is set by `callbacks.EpochSync`."""

    def __init__(self, images: np.ndarray, labels: Mapping[str, np.ndarray], plan: BatchPlan) -> None:
        super().__init__()
        self.images = images
        self.labels = dict(labels)
        self.plan = plan
        self.epoch = 0

    def __len__(self) -> int:
        return self.plan.steps_per_epoch

    def __getitem__(self, step: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        # Sorted, so a memory-mapped array is read forwards; order inside a batch does not matter.
        idx = np.sort(self.plan.indices(self.epoch, step))
        return self.images[idx], {t: v[idx] for t, v in self.labels.items()}
