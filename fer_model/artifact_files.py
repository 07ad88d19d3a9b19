"""The JSON files that cross module boundaries, as typed values: one reader and one writer form each.

- `metrics.json` (an evaluation folder): `EvaluationMetrics`, written by `fer_model.evaluation`,
  read by the report, the model card, the gate, the evaluate component, the pipeline runner.
- `config.json` (a model artifact folder): `ModelArtifactConfig`, written by
  `fer_model.model_artifact`, read by evaluation, prediction, the model card and the release steps.

The writers build the dataclass and write `to_dict()`; the readers call `read(path)`, so the two
sides cannot drift. `from_dict` checks every key's presence and type and raises `ArtifactError`
naming the file and the key path (`tasks.emotion.accuracy`). `to_dict` reproduces the files as
they have always been written (same keys, same order), so older artifacts still load and a
read-then-write round trip is the identity. Keys that later writers added (`untrained_classes`,
`fairness_by_predicted_group`, `training_copies`, `dataset_split_sha256`) are None when a file
predates them and are then left out again.

The `model`, `training` and `alignment` sections of config.json stay plain dicts: their typed forms
(`ModelConfig`, `TrainConfig`, `AlignConfig`) live in modules that import Keras or OpenCV, which
this module, read on light paths (gate, model card, `--help`), must not.

This module imports only the standard library, `fer_model.tasks` and its JSON helpers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_model._json_fields import JsonFields, find_file, load_json
from fer_model.errors import ArtifactError
from fer_model.tasks import TASKS_BY_NAME

#: The evaluation folder's files.
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
#: The model artifact folder's files.
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
KERAS_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model/1"

MODEL_FORMAT_NAME = "fer-mtl-model"
MODEL_FORMAT_VERSION = 1

_EVALUATE_FIX = "re-create it with `fer-mtl evaluate`"
_TRAIN_FIX = "re-train it with `fer-mtl train`"


# --- metrics.json -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class, and its support (number of true samples)."""

    precision: float
    recall: float
    f1: float
    support: int

    @classmethod
    def _read(cls, f: JsonFields) -> ClassMetrics:
        return cls(precision=f.number("precision"), recall=f.number("recall"), f1=f.number("f1"),
                   support=f.integer("support"))

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass(frozen=True)
class TaskMetrics:
    """One task's scores on the evaluated split; accuracy and macro-F1 are None with no labelled sample.

    `confusion_matrix[i][j]` counts true class i predicted as j, in the order of `classes`.
    """

    accuracy: float | None
    macro_f1: float | None
    n_labelled: int
    n_unlabelled: int
    classes: tuple[str, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]
    per_class: Mapping[str, ClassMetrics]

    def __post_init__(self) -> None:
        n = len(self.classes)
        if len(self.confusion_matrix) != n or any(len(row) != n for row in self.confusion_matrix):
            raise ArtifactError(f"`confusion_matrix` must be {n}x{n} for classes {list(self.classes)}")
        if list(self.per_class) != list(self.classes):
            raise ArtifactError(f"`per_class` must list the classes {list(self.classes)} in order, "
                                f"got {list(self.per_class)}")

    @classmethod
    def _read(cls, f: JsonFields) -> TaskMetrics:
        rows = f.get("confusion_matrix")
        if not isinstance(rows, list) or not all(
            isinstance(row, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in row) for row in rows
        ):
            raise f.fail("confusion_matrix", "a list of lists of integers", rows)
        per_class = f.obj("per_class")
        try:
            return cls(
                accuracy=f.number_or_none("accuracy"),
                macro_f1=f.number_or_none("macro_f1"),
                n_labelled=f.integer("n_labelled"),
                n_unlabelled=f.integer("n_unlabelled"),
                classes=f.names("classes"),
                confusion_matrix=tuple(tuple(row) for row in rows),
                per_class={c: ClassMetrics._read(per_class.obj(c)) for c in per_class.data},
            )
        except ArtifactError as e:
            if str(e).startswith(f.source):
                raise
            raise ArtifactError(f"{f.source}: `{f.where}`: {e}; {f.fix}") from e

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "n_labelled": self.n_labelled,
            "n_unlabelled": self.n_unlabelled,
            "classes": list(self.classes),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "per_class": {c: m.to_dict() for c, m in self.per_class.items()},
        }


@dataclass(frozen=True)
class GroupAccuracy:
    """Emotion accuracy over the `n` samples of one group; None when the group is empty."""

    n: int
    emotion_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "emotion_accuracy": self.emotion_accuracy}


@dataclass(frozen=True)
class TaskAccuracy:
    """Accuracy over the `n_labelled` faces of one task; None when none is labelled."""

    n_labelled: int
    accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"n_labelled": self.n_labelled, "accuracy": self.accuracy}


@dataclass(frozen=True)
class TrainingCopies:
    """The scored faces that copy a training face (`fer_model.split_overlap`).

    A model can answer those from memory, so `without` is the score on faces it cannot have seen.

    Attributes:
        n: Scored faces whose pixels also occur in the training split (exact copies).
        without: task -> accuracy on the scored faces that copy no training face.
        n_near: Scored faces that are the same photo as a training face, re-cropped, re-encoded or
            re-lit, not counted in `n`; None in files written before near copies were looked for,
            whose `without` leaves out exact copies only.
    """

    n: int
    without: Mapping[str, TaskAccuracy]
    n_near: int | None = None

    @classmethod
    def _read(cls, f: JsonFields) -> TrainingCopies:
        without = f.obj("without")
        return cls(n=f.integer("n"), n_near=f.integer("n_near") if f.has("n_near") else None, without={
            t: TaskAccuracy(n_labelled=without.obj(t).integer("n_labelled"),
                            accuracy=without.obj(t).number_or_none("accuracy"))
            for t in without.data
        })

    def to_dict(self) -> dict[str, Any]:
        near = {} if self.n_near is None else {"n_near": self.n_near}
        return {"n": self.n, **near, "without": {t: a.to_dict() for t, a in self.without.items()}}

    @property
    def total(self) -> int:
        """Scored faces that copy a training face, exactly or nearly."""
        return self.n + (self.n_near or 0)

    def describe(self) -> str:
        """How many copies of each kind, as a clause: "3 are exact copies of training faces and ..."."""
        exact = f"{self.n} {'is an exact copy' if self.n == 1 else 'are exact copies'} of training faces"
        if self.n_near is None:
            return exact
        near = "is a near copy" if self.n_near == 1 else "are near copies"
        return f"{exact} and {self.n_near} more {near} (the same photo re-cropped, re-encoded or re-lit)"


#: attribute (gender, race, age) -> group (class name) -> emotion accuracy in that group.
FairnessTable = Mapping[str, Mapping[str, GroupAccuracy]]


def _read_fairness(f: JsonFields) -> dict[str, dict[str, GroupAccuracy]]:
    table: dict[str, dict[str, GroupAccuracy]] = {}
    for attribute in f.data:
        groups = f.obj(attribute)
        table[attribute] = {}
        for group in groups.data:
            g = groups.obj(group)
            table[attribute][group] = GroupAccuracy(n=g.integer("n"),
                                                    emotion_accuracy=g.number_or_none("emotion_accuracy"))
    return table


def _fairness_dict(table: FairnessTable) -> dict[str, Any]:
    return {a: {g: row.to_dict() for g, row in groups.items()} for a, groups in table.items()}


@dataclass(frozen=True)
class ModelInfo:
    """Which model was evaluated, and on which data (the `model` section of metrics.json).

    Attributes:
        path: The model artifact folder.
        dataset_manifest_sha256: sha256 of the dataset manifest the model was trained on.
        evaluated_dataset_manifest_sha256: sha256 of the dataset manifest it was evaluated on.
        evaluated_split_sha256: sha256 of the scored split's faces and true labels
            (`Dataset.split_sha256`); None in files written before it existed.
        dataset_matches: Whether the scored faces and labels are the training dataset's split of
            that name: the same manifest, or the split hash config.json recorded at training time
            (so a rebuild or a taught copy still counts). None when the model records neither.
        loss_weights: The loss weights it was trained with, per task.
        flip_average: Whether each face was scored as the mean of it and its mirror image.
    """

    path: str | None = None
    dataset_manifest_sha256: str | None = None
    evaluated_dataset_manifest_sha256: str | None = None
    evaluated_split_sha256: str | None = None
    dataset_matches: bool | None = None
    loss_weights: Mapping[str, float] = field(default_factory=dict)
    flip_average: bool = False

    @classmethod
    def _read(cls, f: JsonFields) -> ModelInfo:
        return cls(
            path=f.text_or_none("path"),
            dataset_manifest_sha256=f.text_or_none("dataset_manifest_sha256"),
            evaluated_dataset_manifest_sha256=f.text_or_none("evaluated_dataset_manifest_sha256"),
            evaluated_split_sha256=(f.text_or_none("evaluated_split_sha256")
                                    if f.has("evaluated_split_sha256") else None),
            dataset_matches=f.flag_or_none("dataset_matches"),
            loss_weights=f.numbers("loss_weights"),
            # Absent from files written before the option existed: those were scored without it.
            flip_average=bool(f.flag_or_none("flip_average")) if f.has("flip_average") else False,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path,
            "dataset_manifest_sha256": self.dataset_manifest_sha256,
            "evaluated_dataset_manifest_sha256": self.evaluated_dataset_manifest_sha256,
            "dataset_matches": self.dataset_matches,
            "loss_weights": dict(self.loss_weights),
        }
        # Absent, not null, in files from before it existed; so they read back key for key.
        if self.evaluated_split_sha256 is not None:
            out["evaluated_split_sha256"] = self.evaluated_split_sha256
        if self.flip_average:
            out["flip_average"] = True
        return out


@dataclass(frozen=True)
class EvaluationMetrics:
    """metrics.json: a model's scores on one split of a dataset (schema in docs/ARCHITECTURE.md).

    Attributes:
        split: The evaluated split ("test", "validation" or "train").
        num_samples: Samples in that split.
        tasks: task -> its scores, for the heads the model has.
        fairness: Emotion accuracy per true gender / race / age group; empty without an emotion head.
        fairness_by_predicted_group: The same, grouped by the model's own group heads; None in files
            written before it existed.
        model: Which model, trained and evaluated on which data.
        training_copies: Scored faces that copy training faces, and the scores without them;
            None for the train split and in files written before it existed.
    """

    split: str
    num_samples: int
    tasks: Mapping[str, TaskMetrics]
    fairness: FairnessTable
    model: ModelInfo
    fairness_by_predicted_group: FairnessTable | None = None
    training_copies: TrainingCopies | None = None

    def task(self, name: str) -> TaskMetrics | None:
        """The scores of task `name`, or None when the model has no such head."""
        return self.tasks.get(name)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = METRICS_FILE) -> EvaluationMetrics:
        """Check and convert a parsed metrics.json; `source` names the file in errors.

        Raises:
            ArtifactError: a key is missing or has the wrong type (the message names it).
        """
        f = JsonFields(data, source=source, fix=_EVALUATE_FIX)
        split, num_samples, tasks = f.text("split"), f.integer("num_samples"), f.obj("tasks")
        by_predicted = f.obj("fairness_by_predicted_group") if f.has("fairness_by_predicted_group") else None
        return cls(
            split=split,
            num_samples=num_samples,
            tasks={name: TaskMetrics._read(tasks.obj(name)) for name in tasks.data},
            fairness=_read_fairness(f.obj("fairness")),
            fairness_by_predicted_group=_read_fairness(by_predicted) if by_predicted else None,
            model=ModelInfo._read(f.obj("model")),
            training_copies=(TrainingCopies._read(f.obj("training_copies")) if f.has("training_copies")
                             else None),
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> EvaluationMetrics:
        """Read metrics.json from a file or from the folder holding it.

        Raises:
            ArtifactError: no such file, not JSON, or not the metrics.json schema.
        """
        target = find_file(path, METRICS_FILE, what="the file or its folder", fix=_EVALUATE_FIX)
        return cls.from_dict(load_json(target, fix=_EVALUATE_FIX), source=str(target))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, key for key what metrics.json holds."""
        out: dict[str, Any] = {
            "split": self.split,
            "num_samples": self.num_samples,
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
            "fairness": _fairness_dict(self.fairness),
        }
        if self.fairness_by_predicted_group is not None:
            out["fairness_by_predicted_group"] = _fairness_dict(self.fairness_by_predicted_group)
        if self.training_copies is not None:
            out["training_copies"] = self.training_copies.to_dict()
        out["model"] = self.model.to_dict()
        return out

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write `folder/metrics.json`, via a temporary name so a reader never sees half of it."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{METRICS_FILE}.tmp"
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, out / METRICS_FILE)
        return out / METRICS_FILE


# --- config.json of a model artifact ------------------------------------------------------------


def _check_tasks(f: JsonFields) -> dict[str, tuple[str, ...]]:
    """The `tasks` section, checked against the label orders of this fer-mtl (fer_model.tasks)."""
    tasks = f.name_lists("tasks")
    if not tasks:
        raise f.fail("tasks", "a non-empty mapping task -> classes", tasks)
    for name, classes in tasks.items():
        if name not in TASKS_BY_NAME or classes != TASKS_BY_NAME[name].classes:
            raise ArtifactError(
                f"{f.source} task {name!r} with classes {list(classes)} does not match this fer-mtl's label "
                "order; use it with the fer-mtl version that trained it"
            )
    return tasks


@dataclass(frozen=True)
class ModelArtifactConfig:
    """config.json of a model artifact (format `fer-mtl-model`, version 1).

    Attributes:
        library_version, keras_version, backend: What wrote the artifact.
        tasks: task -> class names, for the heads the model has, in head order.
        input_size: Side of the square grayscale face the model takes.
        input_name: Name of the model's (and the SavedModel signature's) input.
        alignment: AlignConfig fields the training data was aligned with (serving must match).
        model: ModelConfig fields; training: TrainConfig fields (plain dicts, see the module docstring).
        loss_weights: The weight of each head's loss.
        dataset_manifest_sha256: sha256 of the dataset manifest it was trained on.
        dataset_split_sha256: split -> `Dataset.split_sha256` of that dataset, so an evaluation
            can tell its held-out faces in a rebuild or a taught copy, whose manifest hash differs;
            None in files written before it existed.
        best_epoch: 0-based index of the restored epoch; epochs_run: epochs trained.
        validation: `val_*` metrics at the best epoch.
        saved_model: The SavedModel folder inside the artifact, or None when not exported.
        untrained_classes: task -> classes with no training label (never predicted); None in
            files written before it existed.
        sha256: relative path -> sha256 of every other file of the artifact (model.keras, the
            SavedModel, history.json), checked on load; None in files written before it existed.
    """

    library_version: str
    keras_version: str
    backend: str
    tasks: Mapping[str, tuple[str, ...]]
    input_size: int
    input_name: str
    alignment: Mapping[str, Any]
    model: Mapping[str, Any]
    training: Mapping[str, Any]
    loss_weights: Mapping[str, float]
    dataset_manifest_sha256: str | None
    best_epoch: int
    epochs_run: int
    validation: Mapping[str, float]
    saved_model: str | None
    untrained_classes: Mapping[str, tuple[str, ...]] | None = None
    sha256: Mapping[str, str] | None = None
    dataset_split_sha256: Mapping[str, str] | None = None
    format: str = MODEL_FORMAT_NAME
    format_version: int = MODEL_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.format != MODEL_FORMAT_NAME:
            raise ArtifactError(f"not a {MODEL_FORMAT_NAME} artifact (format={self.format!r})")
        if self.format_version != MODEL_FORMAT_VERSION:
            raise ArtifactError(f"model format version {self.format_version!r}, this fer-mtl reads version "
                                f"{MODEL_FORMAT_VERSION}; {_TRAIN_FIX}")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = CONFIG_FILE) -> ModelArtifactConfig:
        """Check and convert a parsed config.json; `source` names the file in errors.

        Raises:
            ArtifactError: another format or version, a missing key or one of the wrong type (named).
        """
        f = JsonFields(data, source=source, fix=_TRAIN_FIX)
        if f.data.get("format") != MODEL_FORMAT_NAME:
            raise ArtifactError(f"{source} is not a {MODEL_FORMAT_NAME} artifact (format={f.data.get('format')!r})")
        if f.data.get("format_version") != MODEL_FORMAT_VERSION:
            raise ArtifactError(f"{source} has model format version {f.data.get('format_version')!r}, this fer-mtl "
                                f"reads version {MODEL_FORMAT_VERSION}; {_TRAIN_FIX}")
        return cls(
            library_version=f.text("library_version"),
            keras_version=f.text("keras_version"),
            backend=f.text("backend"),
            tasks=_check_tasks(f),
            input_size=f.integer("input_size"),
            input_name=f.text("input_name"),
            alignment=f.plain("alignment"),
            model=f.plain("model"),
            training=f.plain("training"),
            loss_weights=f.numbers("loss_weights"),
            dataset_manifest_sha256=f.text_or_none("dataset_manifest_sha256"),
            best_epoch=f.integer("best_epoch"),
            epochs_run=f.integer("epochs_run"),
            validation=f.numbers("validation"),
            saved_model=f.text_or_none("saved_model"),
            untrained_classes=f.name_lists("untrained_classes") if f.has("untrained_classes") else None,
            sha256=_file_hashes(f) if f.has("sha256") else None,
            dataset_split_sha256=(_split_hashes(f) if f.has("dataset_split_sha256") else None),
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ModelArtifactConfig:
        """Read config.json from a model artifact folder (or the file itself); needs no TensorFlow.

        Raises:
            ArtifactError: no such folder or file, not JSON, or not a version-1 model config.
        """
        given = Path(path)
        if not given.exists():
            raise ArtifactError(f"model artifact {given} does not exist or is not a folder (run `fer-mtl train`)")
        if given.is_dir() and not (given / CONFIG_FILE).is_file():
            raise ArtifactError(f"{given} is not a model artifact: {CONFIG_FILE} is missing (run `fer-mtl train`)")
        target = find_file(given, CONFIG_FILE, what="a model artifact folder", fix=_TRAIN_FIX)
        return cls.from_dict(load_json(target, fix=_TRAIN_FIX), source=str(target))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, key for key (and in the order) config.json holds."""
        out: dict[str, Any] = {
            "format": self.format,
            "format_version": self.format_version,
            "library_version": self.library_version,
            "keras_version": self.keras_version,
            "backend": self.backend,
            "tasks": {t: list(c) for t, c in self.tasks.items()},
            "input_size": self.input_size,
            "input_name": self.input_name,
            "alignment": dict(self.alignment),
            "model": dict(self.model),
            "training": dict(self.training),
            "loss_weights": dict(self.loss_weights),
            "dataset_manifest_sha256": self.dataset_manifest_sha256,
        }
        # Absent, not null, in files from before it existed; so they read back key for key.
        if self.dataset_split_sha256 is not None:
            out["dataset_split_sha256"] = dict(self.dataset_split_sha256)
        out |= {
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "validation": dict(self.validation),
            "saved_model": self.saved_model,
        }
        if self.untrained_classes is not None:
            out["untrained_classes"] = {t: list(c) for t, c in self.untrained_classes.items()}
        if self.sha256 is not None:
            out["sha256"] = dict(self.sha256)
        return out

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write `folder/config.json` (the folder is the model artifact being assembled)."""
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _split_hashes(f: JsonFields) -> dict[str, str]:
    """config.json's {split: sha256 hex of its faces and labels} section."""
    section = f.obj("dataset_split_sha256")
    hashes = {split: section.text(split) for split in section.data}
    for split, digest in hashes.items():
        if len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise section.fail(split, "a sha256 hex digest of the split's faces and labels", digest)
    return hashes


def _file_hashes(f: JsonFields) -> dict[str, str]:
    """config.json's {relative path: sha256 hex} section."""
    section = f.obj("sha256")
    hashes = {name: section.text(name) for name in section.data}
    for name, digest in hashes.items():
        if len(digest) != 64 or name.startswith("/") or ".." in name.split("/"):
            raise section.fail(name, "a sha256 hex digest of a file inside the artifact", digest)
    return hashes
