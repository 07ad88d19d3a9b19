"""Epoch checkpoints: everything a killed `fit` needs to continue as if it had never stopped.

One file, `checkpoint.npz`, rewritten atomically (temporary name, then rename) at every epoch end:
the model's variables (weights, batch-norm statistics, dropout/augmentation seed states), the
optimizer's (step counter, so per-step schedules continue at the right step; moments; learning
rate), the callbacks' counters (best value, wait, best weights), the per-epoch history so far and
a fingerprint of the configuration, so a checkpoint is never resumed under different settings.

A pod's disk does not outlive the pod: `fetch_checkpoint` and `MirrorCheckpoint` keep a copy at a
`gs://` prefix (one object, replaced whole each epoch), so a retried pod resumes where the killed one
last finished an epoch.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fer_model.errors import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT_VERSION = 1
#: Callback attributes saved and restored (those a callback has); arrays go separately.
_CALLBACK_COUNTERS = ("wait", "best", "best_epoch", "cooldown_counter", "stopped_epoch")


@dataclass
class Checkpoint:
    """The state after `epochs_done` epochs; `finished` once training ended for good (not interrupted)."""

    epochs_done: int
    fingerprint: str
    history: dict[str, list[float]] = field(default_factory=dict)
    finished: bool = False
    model_variables: list[np.ndarray] = field(default_factory=list)
    optimizer_variables: list[np.ndarray] = field(default_factory=list)
    callback_counters: dict[str, dict[str, Any]] = field(default_factory=dict)
    callback_best_weights: dict[str, list[np.ndarray]] = field(default_factory=dict)


def read_checkpoint(directory: str | os.PathLike[str], *, fingerprint: str) -> Checkpoint | None:
    """The checkpoint in `directory`, or None if there is none; a checkpoint of other settings is an error."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        arrays = {k: data[k] for k in data.files if k != "meta"}
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"{path} has format {meta.get('format_version')!r}, expected {FORMAT_VERSION}; "
                          "delete it to train from scratch")
    if meta["fingerprint"] != fingerprint:
        raise ConfigError(f"{path} was written by a run with other settings; resume with the same flags, "
                          "or delete the checkpoint to train from scratch")

    def listed(prefix: str) -> list[np.ndarray]:
        return [arrays[f"{prefix}/{i}"] for i in range(meta["counts"].get(prefix, 0))]

    return Checkpoint(
        epochs_done=meta["epochs_done"], fingerprint=meta["fingerprint"], history=meta["history"],
        finished=meta["finished"], model_variables=listed("model"), optimizer_variables=listed("optimizer"),
        callback_counters=meta["callback_counters"],
        callback_best_weights={name: listed(f"best/{name}") for name in meta["best_weights"]},
    )


def write_checkpoint(directory: str | os.PathLike[str], checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` to `directory/checkpoint.npz` atomically (a reader sees the old or the new one)."""
    arrays: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def put(prefix: str, values: list[np.ndarray]) -> None:
        counts[prefix] = len(values)
        arrays.update({f"{prefix}/{i}": np.asarray(v) for i, v in enumerate(values)})

    put("model", checkpoint.model_variables)
    put("optimizer", checkpoint.optimizer_variables)
    for name, weights in checkpoint.callback_best_weights.items():
        put(f"best/{name}", weights)
    meta = {"format_version": FORMAT_VERSION, "epochs_done": checkpoint.epochs_done,
            "fingerprint": checkpoint.fingerprint, "history": checkpoint.history, "finished": checkpoint.finished,
            "callback_counters": checkpoint.callback_counters, "best_weights": sorted(checkpoint.callback_best_weights),
            "counts": counts}
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{CHECKPOINT_FILE}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out / CHECKPOINT_FILE)
    return out / CHECKPOINT_FILE


def restore_model(model: keras.Model, checkpoint: Checkpoint) -> None:
    """Load the checkpoint's model and optimizer variables into a compiled `model` (optimizer built here)."""
    _assign(model.variables, checkpoint.model_variables, what="model")
    model.optimizer.build(model.trainable_variables)
    _assign(model.optimizer.variables, checkpoint.optimizer_variables, what="optimizer")


def _assign(variables: list[Any], values: list[np.ndarray], *, what: str) -> None:
    if len(variables) != len(values):
        raise ConfigError(f"the checkpoint holds {len(values)} {what} variables, the model has {len(variables)}; "
                          "it comes from another architecture: delete it to train from scratch")
    for variable, value in zip(variables, values, strict=True):
        variable.assign(value)


def _to_python(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    return float(np.asarray(value))


def restore_callbacks(stateful: Mapping[str, keras.callbacks.Callback], start: Checkpoint) -> None:
    """Put the counters (and best weights) saved in `start` back on the callbacks named in `stateful`."""
    for name, callback in stateful.items():
        for attr, value in start.callback_counters.get(name, {}).items():
            setattr(callback, attr, value)
        if name in start.callback_best_weights and hasattr(callback, "best_weights"):
            callback.best_weights = start.callback_best_weights[name] or None


def capture(model: keras.Model, *, stateful: Mapping[str, keras.callbacks.Callback], epochs_done: int,
            fingerprint: str, history: Mapping[str, list[float]], finished: bool) -> Checkpoint:
    """The checkpoint of a model (and its optimizer) and of the callbacks in `stateful`, as they are now."""
    counters = {name: {a: _to_python(getattr(c, a)) for a in _CALLBACK_COUNTERS if hasattr(c, a)}
                for name, c in stateful.items()}
    best = {name: list(c.best_weights) for name, c in stateful.items()
            if getattr(c, "best_weights", None) is not None}
    return Checkpoint(
        epochs_done=epochs_done, fingerprint=fingerprint, history=dict(history), finished=finished,
        model_variables=[np.asarray(v) for v in model.variables],
        optimizer_variables=[np.asarray(v) for v in model.optimizer.variables],
        callback_counters=counters, callback_best_weights=best,
    )


def fetch_checkpoint(uri: str, directory: str | os.PathLike[str]) -> bool:
    """Download `uri/checkpoint.npz` (a gs:// prefix) into `directory`; False when there is none yet.

    Raises:
        StorageError: the bucket cannot be reached or read.
    """
    from fer_model import storage

    remote = f"{uri.rstrip('/')}/{CHECKPOINT_FILE}"
    if not storage.exists(remote):
        return False
    storage.download(remote, Path(directory) / CHECKPOINT_FILE)
    logger.info("fetched the epoch checkpoint %s", remote)
    return True


class MirrorCheckpoint(keras.callbacks.Callback):
    """Uploads the local epoch checkpoint to `uri` after each epoch and at the end of training.

    Runs after the callback that writes the checkpoint (fit's extra callbacks follow its own). GCS
    replaces an object whole, so a reader of `uri` finds the previous epoch's checkpoint or this one,
    never half of one.
    """

    def __init__(self, directory: str | os.PathLike[str], uri: str) -> None:
        super().__init__()
        self.local = Path(directory) / CHECKPOINT_FILE
        self.remote = f"{uri.rstrip('/')}/{CHECKPOINT_FILE}"

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self._push()

    def on_train_end(self, logs: Any = None) -> None:
        self._push()

    def _push(self) -> None:
        from fer_model import storage

        if self.local.exists():
            storage.upload(self.local, self.remote)
