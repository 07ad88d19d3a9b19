"""MODEL_CARD.md for a model artifact, rendered from the artifact's own files.

The card's numbers come from `metrics.json` (evaluation on held-out data) and `config.json`, never
typed by hand, so a card cannot drift from the model it describes; a test re-renders the shipped
card and compares.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fer_model.artifact_files import EvaluationMetrics, ModelArtifactConfig
from fer_model.errors import ArtifactError

EXPERIMENT_FILE = "experiment.json"
CARD_FILE = "MODEL_CARD.md"

_DATA = """\
| data | used for | licence |
|---|---|---|
| FER2013 (Goodfellow et al., 2013): `Training` rows; `PublicTest` held out | emotion | research use |
| UTKFace (Zhang et al., 2017): 8,000 crops, seeded 80/10/10 split | gender, race, age | **non-commercial** |
"""

_LIMITATIONS = """\
- **Licence**: UTKFace is licensed for non-commercial research only; this model inherits that
  restriction. Do not use it commercially.
- **No image carries all four labels**: emotion was learned from FER2013 alone, gender/race/age from
  UTKFace alone (masked losses), or from UTKFace-trained teachers' targets on FER2013 faces where the
  run says so. Emotion accuracy per *true* demographic group cannot be measured on
  these data; the table above groups by the model's *predicted* group, which inherits those heads' errors.
- **Domain shift between the sources**: the gender, race and age heads learned from UTKFace's colour
  200x200 crops and transfer imperfectly to FER2013's 48x48 gray faces (e.g. strongly expressive
  adult faces put in the 0-3 or 70+ age bins). Read the predicted-group table as a lens on the
  heads as much as on emotion bias.
- **Coarse, contested categories**: race has three classes (UTKFace's Indian and Others are unlabelled
  for race, so those faces are only seen by the other heads); gender is binary in the training data,
  so the head's `unsure` class had no example and is switched off (see Training); age is five bins.
- **Low-resolution web faces**: FER2013 faces are 48x48 web crops; expect lower accuracy on
  profile views, occlusion, children and extreme lighting. Emotion labels are single annotations.
- **Not for decisions about people**: inferring emotion, gender, race or age from a face is error-prone
  and can be discriminatory. Do not use it for hiring, policing, access, or any consequential decision.
"""


def _load_experiment(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path} is missing or unreadable: {e}") from e


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def _optimizer_line(training: Mapping[str, Any]) -> str:
    """E.g. "Adam lr 0.001" (the paper's plateau schedule) or "Adam lr 0.0005, cosine schedule, 1 warm-up epoch"."""
    text = f"{str(training.get('optimizer', 'adam')).replace('adam', 'Adam').replace('sgd', 'SGD')} lr " \
        f"{training.get('learning_rate')}"
    schedule = training.get("schedule", "plateau")
    if schedule != "plateau":
        warmup = int(training.get("warmup_epochs") or 0)
        text += f", {schedule} schedule" + (f", {warmup} warm-up epoch{'s' if warmup != 1 else ''}" if warmup else "")
    if training.get("weight_decay"):
        text += f", weight decay {training['weight_decay']}"
    return text


def render_model_card(model_dir: str | os.PathLike[str]) -> str:
    """The model card text of a model artifact that holds `metrics.json` (and optionally `experiment.json`,
    the experiment record with the environment it trained in)."""
    root = Path(model_dir)
    config = ModelArtifactConfig.read(root)
    metrics = EvaluationMetrics.read(root)
    experiment = _load_experiment(root / EXPERIMENT_FILE) if (root / EXPERIMENT_FILE).is_file() else {}
    model, training = config.model, config.training
    env: Mapping[str, Any] = experiment.get("environment", {})
    lines = [
        "# Model card: fer-mtl pretrained multi-task model",
        "",
        "One CNN (the layers of arXiv 2110.15028, width multiplier "
        f"{model.get('width')}) predicting emotion, gender, race and age bin from a 50x50 grayscale face "
        "aligned on the eye centres. `fer-mtl predict` and `fer-mtl serve` use it when no model is given.",
        "",
        "## Intended use",
        "Research and prototyping of facial-expression analysis; demos of the fer-mtl pipeline. "
        "Non-commercial only (see the licences below).",
        "",
        "## Training data",
        _DATA,
        "## Training",
        f"- Heads: {', '.join(config.tasks)}; loss weights "
        + ", ".join(f"{t} {w:g}" for t, w in config.loss_weights.items()),
        f"- Batch {training.get('batch_size')}, {_optimizer_line(training)}, "
        f"augmentation {'on' if model.get('augment') else 'off'}, "
        f"dropout {'/'.join(f'{r:g}' for r in model.get('dropout') or ())}, "
        f"label smoothing {training.get('label_smoothing')}, "
        f"mixed precision {'on' if training.get('mixed_precision') else 'off'}",
        f"- Epochs run {config.epochs_run}, best epoch {config.best_epoch + 1} "
        "(early stopping on validation emotion accuracy, best weights restored)",
    ]
    silenced = config.untrained_classes or {}
    if silenced:
        lines.append("- Never predicted (no training example, probability fixed at 0): "
                     + "; ".join(f"{t} {', '.join(c)}" for t, c in silenced.items()))
    if experiment.get("description"):
        lines.append(f"- Run: {experiment['description']}")
    if env:
        lines.append(f"- Trained with Keras on {env.get('backend')}, {env.get('device')} ({env.get('machine')})")
    lines += [
        f"- Alignment: eye levelling {'on' if config.alignment.get('eye_alignment', True) else 'off'}, "
        f"rotation capped at {config.alignment.get('max_angle', 10)} degrees",
        "",
        f"## Accuracy on held-out data (split `{metrics.split}`)",
        "| task | accuracy | macro-F1 | test samples | held-out data |",
        "|---|---|---|---|---|",
    ]
    where = {"emotion": "FER2013 PublicTest"}
    for task, m in metrics.tasks.items():
        lines.append(f"| {task} | {_pct(m.accuracy)} | {_pct(m.macro_f1)} | {m.n_labelled} "
                     f"| {where.get(task, 'UTKFace held-out split')} |")
    copies = metrics.training_copies
    if copies is not None and copies.total:
        lines += ["", f"Of the {metrics.num_samples} held-out faces, {copies.describe()}: FER2013 repeats photos "
                  "across its sets, and a model can answer those from memory. Without them: "
                  + ", ".join(f"{t} {_pct(a.accuracy)} ({a.n_labelled} faces)" for t, a in copies.without.items())
                  + "."]
    groups = metrics.fairness_by_predicted_group or {}
    if groups:
        lines += ["", "## Emotion accuracy by predicted group (FER2013 PublicTest)",
                  "| attribute | group | faces | emotion accuracy |", "|---|---|---|---|"]
        for attribute, rows in groups.items():
            for group, row in rows.items():
                lines.append(f"| {attribute} | {group} | {row.n} | {_pct(row.emotion_accuracy)} |")
    lines += ["", "## Limitations and biases", _LIMITATIONS]
    return "\n".join(lines)


def write_model_card(model_dir: str | os.PathLike[str]) -> Path:
    """Render and write `MODEL_CARD.md` into the model artifact folder."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(render_model_card(model_dir))
    return path
