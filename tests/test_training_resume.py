"""Checkpointed training: a run SIGKILLed mid-epoch resumes where its last epoch checkpoint left it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fer_model.checkpoint import CHECKPOINT_FILE, Checkpoint, read_checkpoint, write_checkpoint
from fer_model.dataset import load_dataset, write_dataset
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig
from fer_model.tasks import MISSING
from fer_model.training import TrainConfig, _arrays, _fingerprint, fit
from tests._fixtures.models import pattern_dataset

keras = pytest.importorskip("keras")

EPOCHS = 4
KILL_EPOCH = 2  # 0-based: epochs 0 and 1 are checkpointed, epoch 2 dies after its first batch
MODEL = ModelConfig(width=0.125)
TRAIN = TrainConfig(epochs=EPOCHS, batch_size=16, learning_rate=1e-3, schedule="cosine", warmup_epochs=1,
                    balanced_batches=True, verbose=0)

# The child trains with a callback that SIGKILLs its own process mid-epoch: no clean-up runs, as
# when a node is pre-empted, and the kill lands at a known batch without racing the clock.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    from fer_model.dataset import load_dataset
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig, fit

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == {kill_epoch} and batch == 1:
                os.kill(os.getpid(), signal.SIGKILL)

    fit(load_dataset(sys.argv[1]), model_config=ModelConfig(width={width}), train_config=TrainConfig(**{train}),
        callbacks=[KillMidEpoch()], checkpoint_dir=sys.argv[2])
    """
)


def _train_kwargs() -> dict:
    return {"epochs": EPOCHS, "batch_size": 16, "learning_rate": 1e-3, "schedule": "cosine", "warmup_epochs": 1,
            "balanced_batches": True, "verbose": 0}


class _Watch(keras.callbacks.Callback):
    """Records the epochs a run trains and its weights and step counter when training begins."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def on_train_begin(self, logs: object = None) -> None:
        self.first_kernel = np.asarray(self.model.get_layer("block1_conv1").kernel).copy()
        self.iterations = int(np.asarray(self.model.optimizer.iterations))

    def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
        self.epochs.append(epoch)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset dir, checkpoint dir) of a training run killed in its epoch KILL_EPOCH."""
    root = tmp_path_factory.mktemp("resume")
    ds = pattern_dataset(n_train=64, n_val=32, missing_rate=0.3, seed=3)
    dataset_dir = write_dataset(root / "data", images=ds.images, labels=ds.labels, split=ds.split)
    script = root / "child.py"
    script.write_text(CHILD.format(kill_epoch=KILL_EPOCH, width=MODEL.width, train=_train_kwargs()))
    checkpoint_dir = root / "checkpoint"
    proc = subprocess.run([sys.executable, str(script), str(dataset_dir), str(checkpoint_dir)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return dataset_dir, checkpoint_dir


def _fingerprint_of(dataset_dir: Path) -> str:
    arrays = _arrays(load_dataset(dataset_dir), model_config=MODEL, train_config=TRAIN)
    return _fingerprint(model_config=MODEL, train_config=TRAIN, arrays=arrays)


def test_killed_run_resumes_without_lost_or_repeated_epochs(killed_run: tuple[Path, Path]) -> None:
    dataset_dir, checkpoint_dir = killed_run
    saved = read_checkpoint(checkpoint_dir, fingerprint=_fingerprint_of(dataset_dir))
    assert saved is not None and saved.epochs_done == KILL_EPOCH and not saved.finished
    assert not list(checkpoint_dir.glob(".*.tmp")), "a half-written checkpoint was left behind"

    watch = _Watch()
    result = fit(load_dataset(dataset_dir), model_config=MODEL, train_config=TRAIN, callbacks=[watch],
                 checkpoint_dir=checkpoint_dir)

    assert watch.epochs == list(range(KILL_EPOCH, EPOCHS))
    assert all(len(values) == EPOCHS for values in result.history.values())
    # The killed run's epochs are kept as they were, not re-run.
    for key, values in saved.history.items():
        assert result.history[key][:KILL_EPOCH] == values
    # It continued from the checkpoint's weights and optimizer step, not from a fresh model.
    conv_index = next(i for i, v in enumerate(result.model.variables) if v.path == "block1_conv1/kernel")
    np.testing.assert_array_equal(watch.first_kernel, saved.model_variables[conv_index])
    assert not np.allclose(watch.first_kernel, _fresh_kernel())
    assert watch.iterations == KILL_EPOCH * _steps_per_epoch(dataset_dir)

    finished = read_checkpoint(checkpoint_dir, fingerprint=_fingerprint_of(dataset_dir))
    assert finished is not None and finished.finished and finished.epochs_done == EPOCHS


def _fresh_kernel() -> np.ndarray:
    """The first conv kernel `fit` would start from without a checkpoint (same seed)."""
    from fer_model.model import build_model

    keras.utils.set_random_seed(TRAIN.seed)
    return np.asarray(build_model(MODEL).get_layer("block1_conv1").kernel)


def _steps_per_epoch(dataset_dir: Path) -> int:
    emotion = load_dataset(dataset_dir).subset("train")[1]["emotion"]
    return -(-int(np.sum(emotion != MISSING)) // TRAIN.batch_size)


def test_finished_run_is_not_trained_again(killed_run: tuple[Path, Path]) -> None:
    dataset_dir, checkpoint_dir = killed_run  # trained to the end by the test above when run in order
    if not read_checkpoint(checkpoint_dir, fingerprint=_fingerprint_of(dataset_dir)).finished:
        fit(load_dataset(dataset_dir), model_config=MODEL, train_config=TRAIN, checkpoint_dir=checkpoint_dir)
    watch = _Watch()
    result = fit(load_dataset(dataset_dir), model_config=MODEL, train_config=TRAIN, callbacks=[watch],
                 checkpoint_dir=checkpoint_dir)
    assert watch.epochs == []
    assert all(len(values) == EPOCHS for values in result.history.values())
    # The best epoch's weights come back; the last 8 arrays are the heads' kernels and biases, which
    # silence_classes may have changed after the checkpoint.
    best = read_checkpoint(checkpoint_dir, fingerprint=_fingerprint_of(dataset_dir)).callback_best_weights
    for got, want in list(zip(result.model.get_weights(), best["early_stopping"], strict=True))[:-8]:
        np.testing.assert_array_equal(got, want)


def test_checkpoint_of_other_settings_is_refused(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, Checkpoint(epochs_done=1, fingerprint="a" * 64))
    assert (tmp_path / CHECKPOINT_FILE).exists()
    with pytest.raises(ConfigError, match="other settings; resume with the same flags"):
        read_checkpoint(tmp_path, fingerprint="b" * 64)
    assert read_checkpoint(tmp_path / "none", fingerprint="a" * 64) is None


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    """Stops like a time limit does: the run is interrupted, not finished."""

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        self.model.stop_training = True


def test_cli_train_resume_continues_the_run_in_its_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from fer_cli import main
    from fer_cli.train import CHECKPOINT_FOLDER

    ds = pattern_dataset(n_train=48, n_val=16, seed=4)
    dataset_dir = write_dataset(tmp_path / "ds", images=ds.images, labels=ds.labels, split=ds.split)
    out = tmp_path / "model"
    # The same settings the CLI flags below give: an interrupted first epoch of a 2-epoch run.
    first = fit(load_dataset(dataset_dir), model_config=ModelConfig(width=0.125, tasks=("emotion",)),
                train_config=TrainConfig(epochs=2, verbose=0), callbacks=[_StopAfterFirstEpoch()],
                checkpoint_dir=out / CHECKPOINT_FOLDER)
    assert len(first.history["loss"]) == 1

    flags = ["train", "--dataset", str(dataset_dir), "--out", str(out), "--epochs", "2", "--width", "0.125",
             "--tasks", "emotion", "--resume"]
    assert main(flags) == 0
    losses = json.loads((out / "history.json").read_text())["loss"]
    assert len(losses) == 2 and losses[0] == first.history["loss"][0]
    assert not (out / CHECKPOINT_FOLDER).exists()  # the artifact replaced the run folder
    capsys.readouterr()
    assert main(flags) == 0
    assert "nothing to resume" in capsys.readouterr().out
