"""Training speed: our `fer_model.training.fit` against the plain Keras recipe, in one process.

Both train the paper's layers (`fer_model.model.build_model`) compiled the same way (masked losses,
paper loss weights, Adam 3e-4, no XLA) at batch 32 on the same synthetic 50x50 uint8 faces with
all four (partly masked) labels, validating every epoch:
- baseline: the plain recipe, `model.fit` on in-memory numpy arrays (Keras' own shuffle) with the
  paper's callbacks (EarlyStopping with best weights restored, ReduceLROnPlateau);
- ours: `training.fit` (seeded batch plans, checkpoint-free, its callbacks: the same two plus the
  learning-rate floor and the epoch hand-off).
An epoch is timed from its start to the end of its validation; the first epoch (tracing) is left
out (reported apart: tracing), the figure is the median of the others, pooled over `--rounds`
alternations of the two recipes. Precisions: float32, and mixed_bfloat16 where the CPU has
avx512_bf16, else mixed_float16 (ours runs bf16 under a global policy, since
`TrainConfig.mixed_precision` means float16).

Run: python benchmarks/bench_training.py [--quick] [--width 1] [--n 1024] [--epochs 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _machine import Figure, Run, cpu_flags  # noqa: E402

from fer_model.dataset import Dataset  # noqa: E402
from fer_model.model import ModelConfig, build_model  # noqa: E402
from fer_model.tasks import MISSING, TASKS  # noqa: E402
from fer_model.training import TrainConfig, compile_model, monitor_metric  # noqa: E402


def synthetic_dataset(n_train: int, n_val: int, seed: int = 0) -> Dataset:
    """Random faces; 30% of each task's labels missing, like a FER2013 + UTKFace mix."""
    n = n_train + n_val
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 50, 50), dtype=np.uint8)
    labels = {}
    for task in TASKS:
        values = rng.integers(0, task.num_classes, size=n)
        values[rng.random(n) < 0.3] = MISSING
        labels[task.name] = values.astype(np.int8)
    split = np.concatenate([np.zeros(n_train, np.uint8), np.ones(n_val, np.uint8)])
    return Dataset(images=images, labels=labels, split=split, manifest={})


class EpochTimer(keras.callbacks.Callback):
    """Epoch wall times: from the start of an epoch to the end of its validation."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _train_config(args: argparse.Namespace, policy: str) -> TrainConfig:
    # Patience past the last epoch: random labels must not stop a timed run early.
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, verbose=0, seed=0,
                       early_stopping_patience=args.epochs, mixed_precision=policy == "mixed_float16")


def plain_recipe(dataset: Dataset, *, args: argparse.Namespace, policy: str) -> list[float]:
    """Epoch seconds of the plain recipe: Keras `model.fit` on numpy arrays with the paper's callbacks."""
    model_config = ModelConfig(width=args.width)
    train_config = _train_config(args, policy)
    keras.utils.set_random_seed(0)
    with _policy(policy):
        model = build_model(model_config)
        compile_model(model, model_config=model_config, train_config=train_config, class_weights=None)
    x_train, y_train = dataset.subset("train")
    x_val, y_val = dataset.subset("validation")
    as_int = {t: v.astype(np.int32) for t, v in y_train.items()}
    monitor = monitor_metric(model_config)
    timer = EpochTimer()
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=args.epochs, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max", factor=0.2, patience=5),
        timer,
    ]
    model.fit(x_train[..., None], as_int, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              validation_data=(x_val[..., None], {t: v.astype(np.int32) for t, v in y_val.items()}),
              callbacks=callbacks, shuffle=True)
    return timer.seconds


def ours(dataset: Dataset, *, args: argparse.Namespace, policy: str) -> list[float]:
    """Epoch seconds of `fer_model.training.fit`."""
    from fer_model.training import fit

    timer = EpochTimer()
    # mixed_float16 goes through TrainConfig; bfloat16 through the global policy fit leaves alone.
    with _policy(policy if policy != "mixed_float16" else "float32"):
        fit(dataset, model_config=ModelConfig(width=args.width), train_config=_train_config(args, policy),
            callbacks=[timer])
    return timer.seconds


@contextmanager
def _policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy set to `name` inside the block."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def rate(seconds: list[float], n_train: int) -> float:
    """Training images per second from the median timed epoch."""
    return n_train / statistics.median(seconds)


def _policies(requested: str) -> list[str]:
    if requested != "auto":
        return requested.split(",")
    # float16 has no fast CPU kernels; bfloat16 does where the CPU has avx512_bf16 (oneDNN).
    return ["float32", "mixed_bfloat16" if cpu_flags().get("avx512_bf16") else "mixed_float16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 0.5, fewer images: about a minute")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default: %(default)s)")
    parser.add_argument("--n", type=int, default=1024, help="training images per epoch (default: %(default)s)")
    parser.add_argument("--n-val", type=int, default=256, help="validation images (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, the first untimed (default: 3)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two recipes (default: 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--precisions", default="auto", help="comma-separated Keras policies (default: all the "
                        "CPU supports)")
    parser.add_argument("--name", default=None, help="result file stem (default: training, training_quick)")
    args = parser.parse_args()
    if args.quick:
        args.width, args.n, args.n_val, args.epochs = 0.5, 512, 128, 3
        args.precisions = "float32" if args.precisions == "auto" else args.precisions
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch is not timed")

    run = Run(args.name or ("training_quick" if args.quick else "training"), vars(args))
    dataset = synthetic_dataset(args.n, args.n_val)
    print(f"width {args.width}, batch {args.batch_size}, {args.n} training + {args.n_val} validation images, "
          f"{args.epochs} epochs (first untimed)", flush=True)
    # Once per process, untimed: TensorFlow's first fit pays one-time start-up costs that would
    # otherwise land in whichever recipe runs first.
    warm_up = argparse.Namespace(**{**vars(args), "n": 64, "n_val": 32, "epochs": 2})
    plain_recipe(synthetic_dataset(64, 32), args=warm_up, policy="float32")
    for policy in _policies(args.precisions):
        plain_s, ours_s, plain_first, ours_first = [], [], [], []
        # Rounds alternate the two recipes, so a change of load on a shared machine hits both.
        for _ in range(args.rounds):
            seconds = plain_recipe(dataset, args=args, policy=policy)
            plain_first.append(seconds[0])
            plain_s.extend(seconds[1:])
            seconds = ours(dataset, args=args, policy=policy)
            ours_first.append(seconds[0])
            ours_s.extend(seconds[1:])
        run.add(Figure(f"training.fit w{args.width:g} b{args.batch_size} {policy}", rate(ours_s, args.n),
                       "images/s", baseline="Keras model.fit on numpy", baseline_value=rate(plain_s, args.n)))
        run.add(Figure(f"training.fit w{args.width:g} {policy} first epoch (tracing)", statistics.median(ours_first),
                       "s", baseline="Keras model.fit on numpy", baseline_value=statistics.median(plain_first),
                       higher_is_better=False))
    run.write()


if __name__ == "__main__":
    main()
