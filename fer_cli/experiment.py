"""`fer-mtl experiment`: the paper's single-task vs multi-task comparison, as a results table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fer_cli._flags import add_settings_flags, settings_from
from fer_model.errors import ConfigError

_RUN_NAMES = ("single_task", "multi_task", "multi_task_tuned")


_MODEL_FLAGS = {"width": "width multiplier", "augment": "in-model augmentation (not in the paper's recipe)"}
_TRAIN_FLAGS = {
    "epochs": "maximum epochs",
    "batch_size": "batch size",
    "learning_rate": "Adam learning rate",
    "label_smoothing": "label smoothing (paper: 0)",
    "mixed_precision": "mixed_float16 (GPUs only)",
    "seed": "random seed",
    "time_limit_s": "stop each run after the epoch that crosses this many seconds (0: no limit; best epoch kept)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `experiment run` and `experiment table`."""
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

    parser = subparsers.add_parser(
        "experiment", help="single-task vs multi-task comparison on one dataset artifact",
        description="Train and score the paper's comparison runs; gather their results into a table.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = actions.add_parser("run", help="train and evaluate one or more runs")
    run.add_argument("--dataset", required=True, help="dataset artifact (e.g. FER2013 + UTKFace prepared together)")
    run.add_argument("--out", required=True, help="results folder; each run writes <out>/<run>/")
    run.add_argument("--runs", default="single_task,multi_task",
                     help=f"comma-separated, from {','.join(_RUN_NAMES)} (default: %(default)s)")
    run.add_argument("--tuned", help="best_params.json from `fer-mtl tune` (needed by multi_task_tuned)")
    add_settings_flags(run, ModelConfig, _MODEL_FLAGS)
    add_settings_flags(run, TrainConfig, _TRAIN_FLAGS)
    run.add_argument("--machine", help="label recorded with every figure (default: host name)")
    run.set_defaults(func=_run)
    table = actions.add_parser("table", help="gather <out>/*/result.json into results.md and results.json")
    table.add_argument("--out", required=True, help="results folder")
    table.set_defaults(func=_table)


def _tuned_weights(path: str | None) -> dict[str, float] | None:
    if path is None:
        return None
    try:
        params = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--tuned {path}: cannot read best parameters: {e}") from e
    # `fer-mtl tune --out` writes {"best": {"loss_weights": ...}}; `tuning.best_params` returns the inner dict.
    weights = params.get("best", params).get("loss_weights") if isinstance(params, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ConfigError(f"--tuned {path}: expected a `loss_weights` mapping task -> weight")
    return {str(k): float(v) for k, v in weights.items()}


def _run(args: argparse.Namespace) -> int:
    from fer_model.experiment import run_one, standard_runs, write_results_table
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in _RUN_NAMES]
    if unknown or not names:
        raise ConfigError(f"--runs has unknown run(s) {unknown}; expected some of {','.join(_RUN_NAMES)}")
    if "multi_task_tuned" in names and not args.tuned:
        raise ConfigError("--runs multi_task_tuned needs --tuned best_params.json (from `fer-mtl tune`)")
    runs = standard_runs(
        model_config=ModelConfig(**settings_from(args, _MODEL_FLAGS)),
        train_config=TrainConfig(**settings_from(args, _TRAIN_FLAGS)),
        tuned_loss_weights=_tuned_weights(args.tuned),
    )
    specs = {r.name: r for r in runs}
    for name in names:
        run_one(specs[name], dataset_dir=args.dataset, out_dir=args.out, machine=args.machine)
    md, _ = write_results_table(args.out)
    print(md.read_text())
    return 0


def _table(args: argparse.Namespace) -> int:
    from fer_model.experiment import write_results_table

    md, js = write_results_table(args.out)
    print(md.read_text())
    print(f"written: {md} and {js}")
    return 0
