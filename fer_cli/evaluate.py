"""`fer-mtl evaluate`: score a model artifact on one split of a dataset artifact and write a report."""

from __future__ import annotations

import argparse
import logging

from fer_model.errors import ConfigError
from fer_model.records import SPLITS

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset split: metrics.json, confusion PNGs, report.md",
        description="Per-task accuracy, macro-F1 and confusion matrices (unlabelled samples excluded), "
        "emotion accuracy per gender/race/age group, and a Markdown report.",
    )
    parser.add_argument("--model", required=True, help="model artifact folder (from `fer-mtl train`)")
    parser.add_argument("--dataset", required=True, help="dataset artifact folder (from `fer-mtl prepare`)")
    parser.add_argument("--out", required=True, help="folder for metrics.json, confusion_<task>.png and report.md")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split to evaluate (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=256, help="prediction batch size (default: %(default)s)")
    parser.add_argument("--flip-average", action="store_true",
                        help="score each face as the mean of it and its mirror image (test-time augmentation)")
    parser.set_defaults(func=run)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    """Evaluate and print one line per task plus where the report is."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from fer_model.evaluation import evaluate

    metrics = evaluate(
        model_dir=args.model, dataset_dir=args.dataset, out_dir=args.out, split=args.split, batch_size=args.batch_size,
        flip_average=args.flip_average,
    )
    print(f"{metrics.split}: {metrics.num_samples} samples")
    for name, t in metrics.tasks.items():
        print(
            f"  {name:<8} accuracy {_fmt(t.accuracy)}  macro-F1 {_fmt(t.macro_f1)}  "
            f"({t.n_labelled} labelled, {t.n_unlabelled} unlabelled excluded)"
        )
    print(f"report: {args.out}/report.md")
    return 0
