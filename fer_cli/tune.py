"""`fer-mtl tune`: Optuna search over the four loss weights, in one or more local worker processes."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from fer_cli._flags import add_settings_flags, settings_from

logger = logging.getLogger(__name__)


_TUNE_FLAGS = {
    "n_trials": "study-wide number of trials",
    "objective": "validation metric to maximise",
    "pruner": "stop unpromising trials early",
    "epochs": "epochs per trial",
    "width": "layer width multiplier of the trial models; None keeps the model's own",
    "seed": "sampler and training seed; worker i samples with seed+i",
    "timeout": "seconds after which workers start no new trial",
}
_TRAIN_FLAGS = {"batch_size": "batch size of every trial", "learning_rate": "learning rate of every trial"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tune` subcommand."""
    from fer_model.training import TrainConfig
    from fer_model.tuning.config import DEFAULT_WEIGHT_RANGE, TuneConfig

    parser = subparsers.add_parser(
        "tune",
        help="search the four loss weights with Optuna (resumable, parallel workers)",
        description=(
            "Train short runs with sampled loss weights and keep the best. Workers (local processes, or "
            "pipeline pods naming the same --storage and --study) share one study; rerunning resumes it."
        ),
    )
    parser.add_argument("--dataset", required=True, help="dataset artifact folder (from `fer-mtl prepare`)")
    parser.add_argument(
        "--storage", required=True,
        help="journal file (e.g. runs/tune.journal) or postgresql://user:password@host:5432/db",
    )
    parser.add_argument("--study", required=True, help="study name (rerun with the same name to resume)")
    parser.add_argument("--workers", type=int, default=1, help="local worker processes (default: %(default)s)")
    add_settings_flags(parser, TuneConfig, _TUNE_FLAGS)
    # The recipe every trial trains with (only the sampled loss weights change): what the run being
    # tuned for will use. The model is ModelConfig's default, at the tuning width if one is set.
    add_settings_flags(parser, TrainConfig, _TRAIN_FLAGS)
    parser.add_argument(
        "--weight-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=list(DEFAULT_WEIGHT_RANGE),
        help="log-uniform range of every task's loss weight (default: %(default)s)",
    )
    parser.add_argument("--lr-range", type=float, nargs=2, metavar=("LOW", "HIGH"), default=None,
                        help="also search the learning rate in this log range")
    parser.add_argument("--out", default=None, help="write best_params.json, trials.csv and plots.html here")
    parser.set_defaults(func=run)


def _print_line(line: str) -> None:
    """Progress sink; module-level so it pickles into spawned workers. Flushed so lines appear per trial."""
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    """Validate the flags, run the workers, print the best settings and optionally write the report."""
    import optuna

    from fer_model.model import ModelConfig
    from fer_model.tasks import TASK_NAMES
    from fer_model.training import TrainConfig
    from fer_model.tuning import SearchSpace, TuneConfig, run_workers, write_study_report
    from fer_model.tuning._storage import redact
    from fer_model.tuning.study import load_study, summarize

    tune_config = TuneConfig(study_name=args.study, storage=args.storage, **settings_from(args, _TUNE_FLAGS))
    search_space = SearchSpace(
        loss_weights={t: tuple(args.weight_range) for t in TASK_NAMES},
        learning_rate=tuple(args.lr_range) if args.lr_range else None,
    )
    model_config = ModelConfig()
    train_config = TrainConfig(seed=tune_config.seed, **settings_from(args, _TRAIN_FLAGS))
    # Our per-trial line replaces Optuna's own INFO line per trial.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"study {args.study} in {redact(args.storage)}: {args.n_trials} trials, {args.workers} worker(s), "
          f"objective {args.objective}, pruner {args.pruner}", flush=True)
    run_workers(
        workers=args.workers, dataset_dir=args.dataset, tune_config=tune_config, search_space=search_space,
        model_config=model_config, train_config=train_config, on_trial=_print_line,
    )
    summary = summarize(load_study(storage=args.storage, study_name=args.study), storage=args.storage)
    print(f"study {summary.study_name}: {summary.n_trials} trials {dict(summary.states)}")
    if summary.best_trial is None:
        print("no trial completed: no best parameters yet", file=sys.stderr)
    else:
        print(f"best {summary.objective}={summary.best_value:.4f} (trial {summary.best_trial}): "
              f"{json.dumps(summary.best_params)}")
    if args.out:
        out = write_study_report(storage=args.storage, study_name=args.study, out_dir=args.out)
        print(f"report: {out}")
    return 0 if summary.best_trial is not None else 1
