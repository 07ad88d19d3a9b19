"""What pruning saves: the same seeded trials trained with and without the median pruner.

Both studies run the *same* points: N loss-weight vectors drawn once (seeded, log-uniform over the
default search space) are enqueued into each study, so the only difference is pruning. Reported:
total epochs trained, wall time, the best value each found, and the ratios (pruned / unpruned).
The dataset is the synthetic sample data prepared into an artifact (or `--dataset DIR`).

Run: .venv/bin/python benchmarks/bench_pruning.py [--trials 10] [--epochs 5] [--width 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from fer_model.model import ModelConfig  # noqa: E402
from fer_model.training import TrainConfig  # noqa: E402
from fer_model.tuning import SearchSpace, TuneConfig, load_study, run_study  # noqa: E402
from fer_model.tuning.config import LOSS_WEIGHT_PARAM  # noqa: E402


def sample_points(n: int, *, seed: int, space: SearchSpace, tasks: tuple[str, ...]) -> list[dict[str, float]]:
    """`n` loss-weight vectors, log-uniform in `space`: the trials both studies run."""
    rng = np.random.default_rng(seed)
    points = []
    for _ in range(n):
        point = {}
        for task in tasks:
            low, high = space.weight_range(task)
            point[LOSS_WEIGHT_PARAM + task] = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        points.append(point)
    return points


def run(*, dataset: Path, storage: Path, pruner: str, points: list[dict[str, float]], args) -> dict:
    import optuna

    config = TuneConfig(study_name=f"bench-{pruner}", storage=str(storage), n_trials=len(points), epochs=args.epochs,
                        pruner=pruner, seed=args.seed, pruner_startup_trials=args.startup,
                        pruner_warmup_epochs=args.warmup)
    study = optuna.create_study(study_name=config.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))), direction="maximize")
    for point in points:
        study.enqueue_trial(point)  # WAITING trials: run_study runs exactly these, in this order
    start = time.perf_counter()
    summary = run_study(dataset_dir=dataset, tune_config=config, model_config=ModelConfig(width=args.width),
                        train_config=TrainConfig(batch_size=args.batch_size, seed=args.seed),
                        on_trial=lambda line: print(f"  [{pruner}] {line}", flush=True))
    wall = time.perf_counter() - start
    trials = load_study(storage=str(storage), study_name=config.study_name).trials
    return {
        "pruner": pruner,
        "wall_s": wall,
        "epochs": sum(t.user_attrs.get("epochs_trained", 0) for t in trials),
        "states": dict(summary.states),
        "best_value": summary.best_value,
        "best_trial": summary.best_trial,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=None, help="dataset artifact (default: sample data)")
    parser.add_argument("--n", type=int, default=600, help="sample faces to generate (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=10, help="trials per study (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per trial (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--startup", type=int, default=3, help="median pruner startup trials (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="epochs never pruned (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of points and training (default: 0)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-pruning-") as tmp:
        dataset = args.dataset
        if dataset is None:
            from fer_model.prepare import prepare_dataset
            from fer_model.sample_data import write_sample_data

            written = write_sample_data(Path(tmp) / "sample", n=args.n, seed=args.seed)
            dataset = prepare_dataset(sources=written["sources"], out_dir=Path(tmp) / "dataset", seed=args.seed)
        points = sample_points(args.trials, seed=args.seed, space=SearchSpace(), tasks=ModelConfig().tasks)
        print(f"{args.trials} trials x {args.epochs} epochs, width {args.width}, batch {args.batch_size}, "
              f"median pruner (startup {args.startup}, warmup {args.warmup}), cpus={os.cpu_count()}", flush=True)
        results = [run(dataset=dataset, storage=Path(tmp) / f"{p}.journal", pruner=p, points=points, args=args)
                   for p in ("none", "median")]
    base, pruned = results
    for r in results:
        print(f"pruner={r['pruner']:<6} epochs={r['epochs']:>3} wall={r['wall_s']:7.1f}s states={r['states']} "
              f"best={r['best_value']:.4f} (trial {r['best_trial']})")
    print(f"pruned/unpruned: epochs x{pruned['epochs'] / base['epochs']:.2f}, wall time "
          f"x{pruned['wall_s'] / base['wall_s']:.2f}; same best trial: {pruned['best_trial'] == base['best_trial']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args) | {"dataset": str(args.dataset)},
                                               "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
