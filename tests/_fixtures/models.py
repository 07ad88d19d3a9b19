"""Model fixtures (a tiny model trained on the sample dataset) and a learnable synthetic dataset.

`tiny_model_dir` is session-scoped: one small model (width 0.25, a few epochs) trained once and
saved as a model artifact, shared by the evaluation, prediction, serving and pipeline tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_model.dataset import Dataset, sha256_file
from fer_model.records import SPLIT_CODES
from fer_model.tasks import MISSING, TASKS

#: Settings of the shared tiny model (small enough to train in seconds on 2 cores).
TINY_WIDTH = 0.25
TINY_EPOCHS = 3


def rerecord_file_hashes(artifact: Path) -> None:
    """Rewrite config.json's file hashes to match the files now in `artifact`, as a re-export would.

    A test that alters a model file and means to reach a check behind the hash check (the probe,
    the archive checks) calls this: whoever can replace model.keras can rewrite config.json too.
    """
    import json

    config_file = artifact / "config.json"
    config = json.loads(config_file.read_text())
    assert config.get("sha256"), f"{artifact} records no file hashes to re-record"
    config["sha256"] = {name: sha256_file(artifact / name) for name in config["sha256"]}
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def pattern_images(labels: dict[str, np.ndarray], *, size: int = 50, seed: int = 0) -> np.ndarray:
    """uint8 [N, size, size] images whose every task's class is drawn as a visible pattern.

    Each task owns a horizontal band of the image; a bright bar inside that band sits at a
    horizontal position given by the class, over a noisy background. -1 labels draw no bar.
    """
    rng = np.random.default_rng(seed)
    n = len(next(iter(labels.values())))
    images = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    band = size // len(TASKS)
    for t_index, task in enumerate(TASKS):
        top = t_index * band + 2
        step = size // task.num_classes
        for i, cls in enumerate(labels[task.name]):
            if cls == MISSING:
                continue
            left = int(cls) * step
            images[i, top : top + band - 4, left : left + max(2, step - 2)] = 230
    return images


def pattern_dataset(
    *, n_train: int = 320, n_val: int = 96, n_test: int = 0, missing_rate: float = 0.2, seed: int = 0
) -> Dataset:
    """An in-memory Dataset whose labels are learnable from `pattern_images`; ~`missing_rate` labels are -1."""
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    labels = {}
    for task in TASKS:
        values = rng.integers(0, task.num_classes, size=n)
        values[rng.random(n) < missing_rate] = MISSING
        labels[task.name] = values.astype(np.int8)
    split = np.concatenate(
        [
            np.full(n_train, SPLIT_CODES["train"]),
            np.full(n_val, SPLIT_CODES["validation"]),
            np.full(n_test, SPLIT_CODES["test"]),
        ]
    ).astype(np.uint8)
    images = pattern_images(labels, seed=seed + 1)
    return Dataset(images=images, labels=labels, split=split, manifest={"_sha256": "0" * 64})


def _dataset_dir_for_tiny_model(request: pytest.FixtureRequest, tmp_root: Path) -> Path:
    """The shared sample dataset artifact; a pattern dataset artifact if that fixture is unavailable."""
    try:
        return Path(request.getfixturevalue("sample_dataset_dir"))
    except pytest.FixtureLookupError:
        from fer_model.dataset import write_dataset

        ds = pattern_dataset(n_train=160, n_val=48, n_test=48, seed=7)
        return write_dataset(tmp_root / "pattern_dataset", images=ds.images, labels=ds.labels, split=ds.split)


@pytest.fixture(scope="session")
def tiny_model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model artifact folder: width 0.25, all four heads, trained a few epochs on the sample dataset."""
    from fer_model.model import ModelConfig
    from fer_model.train_run import train
    from fer_model.training import TrainConfig

    root = tmp_path_factory.mktemp("tiny_model")
    dataset_dir = _dataset_dir_for_tiny_model(request, root)
    result = train(
        dataset_dir=dataset_dir,
        out_dir=root / "model",
        model_config=ModelConfig(width=TINY_WIDTH),
        train_config=TrainConfig(epochs=TINY_EPOCHS, batch_size=32, learning_rate=1e-3, verbose=0, seed=0),
    )
    return result.model_dir
