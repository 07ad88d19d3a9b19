"""Training images/s of the paper's layers on one GPU (Keras on JAX): ours against the plain recipe.

The same two recipes as `benchmarks/bench_training.py` (Keras `model.fit` on numpy arrays with the
paper's callbacks, and `fer_model.training.fit`), each epoch validated, timed after a warm-up epoch,
at batch 32 float32, 256 and 1024 mixed_bfloat16. Reference for these layers on one H200: about
7,100 images/s at batch 32 fp32, 53,000 at 256 bf16, 70,000 at 1024 bf16.

Run through `run_gpu_bench.sh` on the GPU machine; `--smoke` runs a tiny version with whatever
Keras backend is installed (CPU too), to check the script before spending GPU time. `--steps` and
`--epochs` size each measurement; the JSON is rewritten after each setting.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

# JAX where it is installed (the GPU machine); elsewhere Keras' default backend, so --smoke runs anywhere.
if importlib.util.find_spec("jax") is not None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
_ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(_ROOT / "benchmarks"), str(_ROOT)]

from _machine import Figure, Run  # noqa: E402

#: (batch size, Keras dtype policy) of each measurement.
SETTINGS = ((32, "float32"), (256, "mixed_bfloat16"), (1024, "mixed_bfloat16"))
POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")


def _device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return keras.backend.backend() + " (no JAX)"


def parse_settings(text: str) -> tuple[tuple[int, str], ...]:
    """"32:float32,256:mixed_bfloat16" -> ((32, "float32"), (256, "mixed_bfloat16"))."""
    settings = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        batch, _, policy = item.partition(":")
        if not batch.isdigit() or int(batch) < 1 or policy not in POLICIES:
            raise argparse.ArgumentTypeError(f"{item!r} is not BATCH:POLICY with POLICY one of {', '.join(POLICIES)}")
        settings.append((int(batch), policy))
    if not settings:
        raise argparse.ArgumentTypeError("--settings lists no BATCH:POLICY pair")
    return tuple(settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (2 steps, 2 epochs, width 0.25): checks "
                        "the script on any machine")
    parser.add_argument("--steps", type=int, default=256, help="training steps per epoch (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run, the first untimed (default: 3)")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default: %(default)s)")
    parser.add_argument("--settings", type=parse_settings, default=SETTINGS,
                        help="comma-separated BATCH:POLICY pairs (default: 32:float32,256:mixed_bfloat16,"
                        "1024:mixed_bfloat16)")
    parser.add_argument("--out", type=Path, default=Path("gpu-results"), help="folder for training_gpu.json")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.epochs, args.width = 2, 2, 0.25
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch is not timed")

    run = Run("training_gpu_smoke" if args.smoke else "training_gpu", vars(args))
    run.settings["device"] = _device()
    print(f"device: {run.settings['device']}", flush=True)
    for batch, policy in args.settings:
        measure(run, args, batch=batch, policy=policy)
        # After every setting, so a call cut short still returns the figures measured so far.
        run.write(args.out)


def measure(run: Run, args: argparse.Namespace, *, batch: int, policy: str) -> None:
    """Both recipes at one batch size and policy: images/s of the timed epochs, seconds of the first."""
    import bench_training  # Keras and the backend load here, after the flags are read (--help stays quick)

    n = batch * args.steps
    sizes = argparse.Namespace(width=args.width, n=n, n_val=max(batch, n // 8), epochs=args.epochs, batch_size=batch)
    dataset = bench_training.synthetic_dataset(sizes.n, sizes.n_val)
    plain = bench_training.plain_recipe(dataset, args=sizes, policy=policy)
    ours = bench_training.ours(dataset, args=sizes, policy=policy)
    name = f"GPU training.fit w{args.width:g} b{batch} {policy}"
    run.add(Figure(name, bench_training.rate(ours[1:], n), "images/s", baseline="Keras model.fit on numpy",
                   baseline_value=bench_training.rate(plain[1:], n)))
    run.add(Figure(f"{name} first epoch (compilation)", ours[0], "s", baseline="Keras model.fit on numpy",
                   baseline_value=plain[0], higher_is_better=False))


if __name__ == "__main__":
    main()
