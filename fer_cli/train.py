"""`fer-mtl train`: fit the multi-task CNN on a dataset artifact and write a model artifact."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
from pathlib import Path

from fer_cli._flags import add_settings_flags, settings_from
from fer_model._settings import field_default
from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES

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


def parse_dropout(text: str) -> tuple[float, float, float, float]:
    """Parse "0.3" (every layer) or "0.6,0.5,0.4,0.4" -> four rates; ModelConfig checks their range."""
    try:
        rates = [float(r) for r in text.split(",")]
    except ValueError:
        raise ConfigError(f"--dropout must be one rate or four comma-separated rates, got {text!r}") from None
    if len(rates) == 1:
        rates *= 4
    if len(rates) != 4:
        raise ConfigError(f"--dropout must be one rate or four comma-separated rates, got {len(rates)}: {text!r}")
    return (rates[0], rates[1], rates[2], rates[3])


_TRAIN_FLAGS = {
    "epochs": "maximum epochs",
    "batch_size": "batch size",
    "learning_rate": "Adam learning rate",
    "seed": "random seed",
    "early_stopping_patience": "epochs without a better validation accuracy before stopping (>= --epochs: never)",
    "mixed_precision": "mixed_float16 (GPUs only)",
    "label_smoothing": "label smoothing in [0, 1)",
    "class_weighting": "weight emotion classes by inverse frequency",
    "schedule": "learning-rate schedule: plateau (the paper), or cosine / onecycle decay to ~0 by the last epoch",
    "warmup_epochs": "linear warm-up epochs before cosine/onecycle decay",
    "optimizer": "adam, or sgd with Nesterov momentum",
    "weight_decay": "decoupled weight decay",
    "balanced_batches": "every batch takes an equal share from each group of faces labelled for the same tasks",
    "distill_weight": "loss weight of teacher soft labels (`fer-mtl teach`) relative to true labels; 0 ignores them",
    "distill_temperature": "temperature of the soft-label loss (the one `fer-mtl teach` used)",
    "distill_threshold": "ignore teacher soft labels whose top probability is below this",
    "distill_blend": "on faces with a true label and a teacher target (`fer-mtl teach --include-labelled`), "
    "the teacher's share of the loss; 0: the true label alone",
    "time_limit_s": "stop after the epoch that crosses this many seconds of training (0: no limit; best epoch kept)",
}
_MODEL_FLAGS = {
    "width": "layer width multiplier",
    "augment": "random flip/rotation/zoom/shift while training",
    "random_erasing": "probability of erasing a random patch of a training face",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train the multi-task CNN on a dataset artifact",
        description="Fit the paper's CNN (masked, weighted per-task losses) and write a model artifact.",
    )
    parser.add_argument("--dataset", required=True, help="dataset artifact folder (from `fer-mtl prepare`)")
    parser.add_argument("--out", required=True, help="model artifact folder to write (replaced if it exists)")
    add_settings_flags(parser, TrainConfig, _TRAIN_FLAGS)
    add_settings_flags(parser, ModelConfig, _MODEL_FLAGS)
    parser.add_argument(
        "--tasks", default=",".join(field_default(ModelConfig, "tasks")),
        help="comma-separated heads to train (default: %(default)s)",
    )
    parser.add_argument(
        "--loss-weights",
        default=None,
        help="TASK=WEIGHT,... (or a JSON object) overriding the paper's (emotion=2,gender=0.1,race=1.5,age=4)",
    )
    parser.add_argument(
        "--dropout", default=None,
        help="dropout after the three conv blocks and the dense layer: one rate, or four comma-separated "
        "(default: the paper's " + ",".join(str(r) for r in field_default(ModelConfig, "dropout")) + ")",
    )
    parser.add_argument("--init-weights", default=None,
                        help="start from this .keras model or model artifact (layers matched by name; a narrower "
                        "model is widened to --width without changing its predictions; its file hash is "
                        "mixed into --seed, so the run does not replay the batches its model was trained on)")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue the run whose checkpoint is in OUT/{CHECKPOINT_FOLDER} (same flags); "
                        "without it, a stale checkpoint there is discarded")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the flags, train, and print where the artifact went."""
    from fer_model._settings import parse_loss_weights
    from fer_model.model import ModelConfig
    from fer_model.train_run import train
    from fer_model.training import TrainConfig, monitor_metric

    # Configs are validated before TensorFlow is imported, so a bad flag fails fast.
    model_config = ModelConfig(tasks=parse_tasks(args.tasks), **settings_from(args, _MODEL_FLAGS))
    if args.dropout is not None:
        model_config = dataclasses.replace(model_config, dropout=parse_dropout(args.dropout))
    train_config = TrainConfig(**settings_from(args, _TRAIN_FLAGS))
    if args.loss_weights is not None:
        weights = parse_loss_weights(args.loss_weights, name="--loss-weights")
        if not weights:
            raise ConfigError(f"--loss-weights must look like emotion=2,age=4, got {args.loss_weights!r}")
        train_config = dataclasses.replace(train_config, loss_weights={**train_config.loss_weights, **weights})
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
