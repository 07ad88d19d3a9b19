"""`fer-mtl train`: fit the multi-task CNN on a dataset artifact and write a model artifact."""

from __future__ import annotations

import argparse
import logging
import math
import shutil
from pathlib import Path

from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES
from fer_model.training import OPTIMIZERS, SCHEDULES  # light: TensorFlow is imported only to train

logger = logging.getLogger(__name__)

#: Where `train` keeps its epoch checkpoint, inside --out (removed once the model artifact is written).
CHECKPOINT_FOLDER = "checkpoint"


def parse_tasks(text: str) -> tuple[str, ...]:
    """Parse "emotion,gender" -> ("emotion", "gender"); raises ConfigError naming an unknown task."""
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    if not tasks:
        raise ConfigError(f"--tasks must list at least one of {','.join(TASK_NAMES)}, got {text!r}")
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown:
        raise ConfigError(f"--tasks has unknown task(s) {unknown}; expected some of {','.join(TASK_NAMES)}")
    return tasks


def parse_loss_weights(text: str) -> dict[str, float]:
    """Parse "emotion=2,age=4" -> {"emotion": 2.0, "age": 4.0}; raises ConfigError on a malformed item."""
    weights: dict[str, float] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        task, sep, value = item.partition("=")
        task = task.strip()
        if not sep or task not in TASK_NAMES:
            raise ConfigError(
                f"--loss-weights item {item!r} must be TASK=WEIGHT with TASK one of {','.join(TASK_NAMES)}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ConfigError(f"--loss-weights item {item!r}: {value!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"--loss-weights item {item!r}: the weight must be a finite number >= 0")
        weights[task] = weight
    if not weights:
        raise ConfigError(f"--loss-weights must look like emotion=2,age=4, got {text!r}")
    return weights


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train the multi-task CNN on a dataset artifact",
        description="Fit the paper's CNN (masked, weighted per-task losses) and write a model artifact.",
    )
    parser.add_argument("--dataset", required=True, help="dataset artifact folder (from `fer-mtl prepare`)")
    parser.add_argument("--out", required=True, help="model artifact folder to write (replaced if it exists)")
    parser.add_argument("--epochs", type=int, default=100, help="maximum epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--width", type=float, default=1.0, help="layer width multiplier (default: %(default)s)")
    parser.add_argument(
        "--tasks", default=",".join(TASK_NAMES), help="comma-separated heads to train (default: %(default)s)"
    )
    parser.add_argument(
        "--loss-weights",
        default=None,
        help="TASK=WEIGHT,... overriding the paper's (emotion=2,gender=0.1,race=1.5,age=4)",
    )
    parser.add_argument("--augment", action="store_true", help="random flip/rotation/zoom/shift while training")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 (GPUs only)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing in [0, 1)")
    parser.add_argument("--class-weighting", action="store_true", help="weight emotion classes by inverse frequency")
    parser.add_argument("--random-erasing", type=float, default=0.0,
                        help="probability of erasing a random patch of a training face (default: %(default)s)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="plateau",
                        help="plateau (the paper), or cosine / onecycle decay to ~0 by the last epoch")
    parser.add_argument("--warmup-epochs", type=int, default=0, help="linear warm-up before cosine/onecycle decay")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="adam, or sgd with Nesterov momentum")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="decoupled weight decay (default: none)")
    parser.add_argument("--balanced-batches", action="store_true",
                        help="every batch takes an equal share from each group of faces labelled for the same tasks")
    parser.add_argument("--init-weights", default=None,
                        help="start from this .keras model or model artifact (layers matched by name)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue the run whose checkpoint is in OUT/{CHECKPOINT_FOLDER} (same flags); "
                        "without it, a stale checkpoint there is discarded")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the flags, train, and print where the artifact went."""
    from fer_model.model import ModelConfig
    from fer_model.tasks import DEFAULT_LOSS_WEIGHTS
    from fer_model.training import TrainConfig, monitor_metric, train

    # Configs are validated before TensorFlow is imported, so a bad flag fails fast.
    model_config = ModelConfig(width=args.width, tasks=parse_tasks(args.tasks), augment=args.augment,
                               random_erasing=args.random_erasing)
    loss_weights = dict(DEFAULT_LOSS_WEIGHTS)
    if args.loss_weights is not None:
        loss_weights.update(parse_loss_weights(args.loss_weights))
    train_config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        loss_weights=loss_weights,
        seed=args.seed,
        mixed_precision=args.mixed_precision,
        label_smoothing=args.label_smoothing,
        class_weighting=args.class_weighting,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        balanced_batches=args.balanced_batches,
    )
    checkpoint_dir = Path(args.out) / CHECKPOINT_FOLDER
    if args.resume and not checkpoint_dir.exists() and (Path(args.out) / "config.json").exists():
        print(f"{args.out} already holds the finished run's model artifact; nothing to resume")
        return 0
    if not args.resume and checkpoint_dir.exists():
        shutil.rmtree(checkpoint_dir)
    result = train(dataset_dir=args.dataset, out_dir=args.out, model_config=model_config, train_config=train_config,
                   checkpoint_dir=checkpoint_dir, initial_weights=args.init_weights)
    monitor = monitor_metric(model_config)
    best = f", {monitor}={result.history[monitor][result.best_epoch]:.4f}" if monitor in result.history else ""
    print(f"wrote {result.model_dir} (best epoch {result.best_epoch + 1}{best})")
    return 0
