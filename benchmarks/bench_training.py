"""CPU training throughput (images/s) of the paper's CNN by width and batch size.

In one process, on the same synthetic 50x50 uint8 images with all four (partly masked) labels,
compiled exactly as `fer_model.training.fit` compiles (masked losses, paper loss weights, Adam,
no XLA): one warm-up epoch (graph tracing), then the mean of `--epochs` timed epochs.
Ratios are against the paper-width model at batch 32, measured first in the same process.

Run: .venv/bin/python benchmarks/bench_training.py [--n 512] [--epochs 1] [--widths 1,0.5,0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from fer_model.model import ModelConfig, build_model  # noqa: E402
from fer_model.tasks import MISSING, TASKS  # noqa: E402
from fer_model.training import TrainConfig, compile_model  # noqa: E402


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 50, 50, 1), dtype=np.uint8)
    labels = {}
    for task in TASKS:
        values = rng.integers(0, task.num_classes, size=n)
        values[rng.random(n) < 0.3] = MISSING  # like a FER2013 + RAF-DB mix: some heads unlabelled
        labels[task.name] = values.astype(np.int32)
    return images, labels


def measure(width: float, batch_size: int, *, n: int, epochs: int) -> float:
    """Training images per second (mean over `epochs` timed epochs after one warm-up epoch)."""
    import keras

    keras.utils.set_random_seed(0)
    model_config = ModelConfig(width=width)
    model = build_model(model_config)
    compile_model(model, model_config=model_config, train_config=TrainConfig(batch_size=batch_size), class_weights=None)
    x, y = _data(n)
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # warm-up: tracing and allocation
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return n * epochs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="synthetic images per epoch (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per setting (default: %(default)s)")
    parser.add_argument("--widths", default="1,0.5,0.25", help="width multipliers (default: %(default)s)")
    parser.add_argument("--batch-sizes", default="32,256", help="batch sizes (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    import keras

    widths = [float(w) for w in args.widths.split(",")]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    print(f"keras {keras.__version__} backend={keras.backend.backend()} cpus={os.cpu_count()} n={args.n}")
    results = []
    baseline = None
    for width in widths:
        for batch in batches:
            rate = measure(width, batch, n=args.n, epochs=args.epochs)
            baseline = baseline or rate  # the first setting (width 1, batch 32 by default) is the baseline
            results.append({"width": width, "batch_size": batch, "images_per_s": rate, "ratio": rate / baseline})
            print(f"width {width:<5} batch {batch:<4} {rate:8.1f} images/s  x{rate / baseline:.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "epochs": args.epochs, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
