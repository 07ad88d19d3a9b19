"""What pruning and a second worker save: time to the best value of the same seeded search, measured.

Both studies run the *same* points: N loss-weight vectors drawn once (seeded, log-uniform over the
default search space) are enqueued into each study, so the differences are the pruner and the
workers:
- baseline: no pruner, one worker (`run_workers(workers=1)`);
- ours: the median pruner, two worker processes sharing the study (`run_workers(workers=2)`).
Reported: the wall time until the trial holding each study's best value finished, the whole
study's wall time, epochs trained, and whether both found the same best trial. Every trial trains
the paper's layers at `--width` on generated sample data prepared into an artifact (or `--dataset`).

Run: python benchmarks/bench_pruning.py [--quick] [--trials 20] [--epochs 4] [--width 0.25]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _machine import Figure, Run  # noqa: E402

from fer_model.model import ModelConfig  # noqa: E402
from fer_model.training import TrainConfig  # noqa: E402
from fer_model.tuning import SearchSpace, TuneConfig, load_study  # noqa: E402
from fer_model.tuning.config import LOSS_WEIGHT_PARAM  # noqa: E402
from fer_model.tuning.study import run_workers  # noqa: E402


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


def run_search(*, dataset: Path, storage: Path, pruner: str, workers: int, points: list[dict[str, float]],
        args: argparse.Namespace) -> dict:
    """One study over `points`; wall time, time to its best value, epochs and best trial."""
    import optuna

    config = TuneConfig(study_name=f"bench-{pruner}", storage=str(storage), n_trials=len(points), epochs=args.epochs,
                        pruner=pruner, seed=args.seed, pruner_startup_trials=args.startup,
                        pruner_warmup_epochs=args.warmup)
    study = optuna.create_study(study_name=config.study_name, storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))), direction="maximize")
    for point in points:
        study.enqueue_trial(point)  # WAITING trials: the workers run exactly these, in this order
    start = time.time()
    run_workers(workers=workers, dataset_dir=dataset, tune_config=config, model_config=ModelConfig(width=args.width),
                train_config=TrainConfig(batch_size=args.batch_size, seed=args.seed, verbose=0))
    wall = time.time() - start
    trials = load_study(storage=str(storage), study_name=config.study_name).trials
    complete = [t for t in trials if t.value is not None and t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: (t.value, -t.number))
    return {
        "pruner": pruner,
        "workers": workers,
        "wall_s": wall,
        "to_best_s": best.datetime_complete.timestamp() - start,
        "epochs": sum(t.user_attrs.get("epochs_trained", 0) for t in trials),
        "states": {s: sum(t.state.name == s for t in trials) for s in {t.state.name for t in trials}},
        "best_value": best.value,
        "best_trial": best.number,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials x 3 epochs on 300 faces")
    parser.add_argument("--dataset", type=Path, default=None, help="dataset artifact (default: sample data)")
    parser.add_argument("--n", type=int, default=400, help="sample faces to generate (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=20, help="trials per study (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--startup", type=int, default=3, help="median pruner startup trials (default: 3)")
    parser.add_argument("--warmup", type=int, default=1, help="epochs never pruned (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of points and training (default: 0)")
    parser.add_argument("--name", default=None, help="result file stem (default: pruning, pruning_quick)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.n = 8, 3, 300

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = Run(args.name or ("pruning_quick" if args.quick else "pruning"), vars(args))
    with tempfile.TemporaryDirectory(prefix="bench-pruning-") as tmp:
        dataset = args.dataset
        if dataset is None:
            from fer_model.prepare import prepare_dataset
            from fer_model.sample_data import write_sample_data

            written = write_sample_data(Path(tmp) / "sample", n=args.n, seed=args.seed)
            dataset = prepare_dataset(sources=written["sources"], out_dir=Path(tmp) / "dataset", seed=args.seed)
        points = sample_points(args.trials, seed=args.seed, space=SearchSpace(), tasks=ModelConfig().tasks)
        print(f"{args.trials} trials x {args.epochs} epochs, width {args.width}, batch {args.batch_size}, "
              f"median pruner (startup {args.startup}, warmup {args.warmup})", flush=True)
        base = run_search(dataset=dataset, storage=Path(tmp) / "none.journal", pruner="none", workers=1,
                          points=points, args=args)
        ours = run_search(dataset=dataset, storage=Path(tmp) / "median.journal", pruner="median", workers=2,
                          points=points, args=args)
    for r in (base, ours):
        print(f"pruner={r['pruner']:<6} workers={r['workers']} epochs={r['epochs']:>3} wall={r['wall_s']:6.1f}s "
              f"to best={r['to_best_s']:6.1f}s states={r['states']} best={r['best_value']:.4f} "
              f"(trial {r['best_trial']})")
    run.settings["studies"] = [base, ours]
    same = "same best trial" if base["best_trial"] == ours["best_trial"] else "another best trial"
    run.add(Figure(f"search time to its best value ({same})", ours["to_best_s"], "s",
                   baseline="unpruned, 1 worker", baseline_value=base["to_best_s"], higher_is_better=False))
    run.add(Figure(f"search wall time, {args.trials} trials, pruned + 2 workers", ours["wall_s"], "s",
                   baseline="unpruned, 1 worker", baseline_value=base["wall_s"], higher_is_better=False))
    run.add(Figure("epochs trained, pruned", ours["epochs"], "epochs", baseline="unpruned",
                   baseline_value=base["epochs"], higher_is_better=False))
    run.add(Figure("best value, pruned + 2 workers", ours["best_value"], "accuracy", baseline="unpruned",
                   baseline_value=base["best_value"]))
    run.write()


if __name__ == "__main__":
    main()
