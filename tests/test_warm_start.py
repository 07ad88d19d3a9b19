"""A warm-started run begins from its initial weights but draws its batches, augmentation and dropout afresh."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fer_model.errors import ConfigError
from fer_model.model import ModelConfig
from fer_model.training import TrainConfig, fit
from fer_model.warm_start import seed_after
from tests._fixtures.models import pattern_dataset

keras = pytest.importorskip("keras")

MODEL = ModelConfig(width=0.125, augment=True)
TRAIN = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, verbose=0)


class _FirstKernel(keras.callbacks.Callback):
    def on_train_begin(self, logs: object = None) -> None:
        self.kernel = np.asarray(self.model.get_layer("block1_conv1").kernel).copy()


def _batches_of(monkeypatch: pytest.MonkeyPatch, **fit_kwargs: Any) -> tuple[list[tuple[int, ...]], np.ndarray, Any]:
    """The faces of each batch the run trained on (by step), its first kernel at the start and the model."""
    from fer_model.batching import PlannedBatches

    served: dict[tuple[int, int], tuple[int, ...]] = {}
    serve = PlannedBatches.__getitem__

    def recording(self: PlannedBatches, step: int) -> object:
        served[(self.epoch, step)] = tuple(np.sort(self.plan.indices(self.epoch, step)).tolist())
        return serve(self, step)

    monkeypatch.setattr(PlannedBatches, "__getitem__", recording)
    watch = _FirstKernel()
    result = fit(pattern_dataset(n_train=192, n_val=32), model_config=MODEL, train_config=TRAIN,
                 callbacks=[watch], **fit_kwargs)
    monkeypatch.undo()
    return [served[key] for key in sorted(served)], watch.kernel, result.model


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, ...]]]:
    """A seed-0 run's model file and the batches it trained on."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        batches, _, model = _batches_of(monkeypatch)
    path = tmp_path_factory.mktemp("parent") / "model.keras"
    model.save(path)
    return path, batches


def test_warm_started_run_does_not_replay_its_parents_batches(parent, monkeypatch, caplog) -> None:
    """Before, a child under the parent's seed trained on the very batches (and augmentation) its parent had."""
    path, parent_batches = parent
    with caplog.at_level(logging.INFO, logger="fer_model.training"):
        child_batches, child_kernel, _ = _batches_of(monkeypatch, initial_weights=path)
    again, _, _ = _batches_of(monkeypatch, initial_weights=path)

    parent_kernel = np.asarray(keras.saving.load_model(path).get_layer("block1_conv1").kernel)
    np.testing.assert_array_equal(child_kernel, parent_kernel)  # it does start from the parent's weights
    assert len(child_batches) == len(parent_batches) == 6
    assert sorted(sum(child_batches, ())) == sorted(sum(parent_batches, ())) == list(range(192))  # every face once
    assert sum(c == p for c, p in zip(child_batches, parent_batches, strict=True)) == 0
    assert again == child_batches  # the same seed and the same file give the same run
    assert f"seed 0 becomes {seed_after(0, path)}" in caplog.text


def test_seed_after_depends_on_the_seed_and_the_file(parent, tmp_path) -> None:
    path, _ = parent
    other = tmp_path / "model.keras"
    other.write_bytes(path.read_bytes() + b"\0")
    seeds = {seed_after(0, path), seed_after(1, path), seed_after(0, other), seed_after(0, path.parent)}
    assert len(seeds) == 3  # the folder resolves to the same model.keras as the file itself
    assert 0 not in seeds  # never the plain seed, which the parent ran under


def test_missing_initial_weights_are_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="initial weights .*nowhere not found"):
        fit(pattern_dataset(n_train=64, n_val=32), model_config=MODEL, train_config=TRAIN,
            initial_weights=tmp_path / "nowhere")
