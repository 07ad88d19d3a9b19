"""`fer-mtl teach`: teacher models label the faces that lack a task's true label (soft labels)."""

from __future__ import annotations

import argparse
import logging

from fer_cli._flags import add_settings_flags, settings_from
from fer_model.errors import ConfigError
from fer_model.records import SPLITS
from fer_model.tasks import TASK_NAMES

logger = logging.getLogger(__name__)

_TEACH_FLAGS = {
    "temperature": "soften the teacher's probabilities at this temperature (train with --distill-temperature T)",
    "threshold": "give no target where the teacher's top probability is below this",
    "batch_size": "faces per forward pass",
    "flip_average": "average each face's teacher probabilities with its mirror image's",
    "align_distribution": "reweight the teacher's probabilities per class so their mean over the faces it labels "
    "matches the class shares of the task's true training labels (distribution alignment)",
    "include_labelled": "also label the faces that have a true label of the task (train with --distill-blend)",
}


def parse_teachers(items: list[str]) -> dict[str, str]:
    """["emotion=models/emotion", ...] -> {"emotion": "models/emotion"}; one teacher per task."""
    teachers: dict[str, str] = {}
    for item in items:
        task, sep, location = item.partition("=")
        task, location = task.strip(), location.strip()
        if not sep or not location or task not in TASK_NAMES:
            raise ConfigError(f"--teacher must look like TASK=MODEL_DIR with TASK one of {','.join(TASK_NAMES)}, "
                              f"got {item!r}")
        if task in teachers:
            raise ConfigError(f"--teacher names {task!r} twice; pass one teacher per task")
        teachers[task] = location
    return teachers


def parse_splits(text: str) -> tuple[str, ...]:
    """"train,validation" -> ("train", "validation"); raises ConfigError naming an unknown split."""
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in splits if s not in SPLITS]
    if not splits or unknown:
        raise ConfigError(f"--splits must list some of {','.join(SPLITS)}, got {text!r}")
    return splits


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `teach` subcommand."""
    from fer_model._settings import field_default
    from fer_model.teachers import TeachConfig

    parser = subparsers.add_parser(
        "teach",
        help="teacher models label the faces that lack a task's label: a dataset artifact with soft labels",
        description="Run each teacher model on the faces without a true label of its task and write a new "
        "dataset artifact carrying its probabilities as soft labels, with their provenance; faces with true "
        "labels keep them. Train on it with `fer-mtl train` (see --distill-weight).",
    )
    parser.add_argument("--dataset", required=True, help="dataset artifact folder to label")
    parser.add_argument("--teacher", action="append", required=True, metavar="TASK=MODEL_DIR",
                        help="a model artifact with a TASK head (e.g. from `fer-mtl train --tasks TASK`); repeatable, "
                        "one per task")
    parser.add_argument("--out", required=True, help="dataset artifact folder to write (not --dataset)")
    parser.add_argument("--splits", default=",".join(field_default(TeachConfig, "splits")),
                        help="comma-separated splits whose faces are labelled (default: %(default)s)")
    add_settings_flags(parser, TeachConfig, _TEACH_FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the flags, label the faces, and print what each teacher labelled."""
    from fer_model.dataset import load_dataset
    from fer_model.teachers import TeachConfig, teach

    # Flags are checked before a teacher model (and TensorFlow) loads.
    config = TeachConfig(splits=parse_splits(args.splits), **settings_from(args, _TEACH_FLAGS))
    teachers = parse_teachers(args.teacher)
    out = teach(dataset_dir=args.dataset, teachers=teachers, out_dir=args.out, config=config)
    provenance = load_dataset(out, verify=False).manifest["soft_labels"]
    print(f"dataset: {out}")
    for task in teachers:
        made = provenance[task]
        kept = made["candidates"] - made["below_threshold"]
        print(f"  {task:<8} {kept} of {made['candidates']} {made['faces']} got teacher targets "
              f"({made['below_threshold']} below threshold {made['threshold']})")
    return 0
