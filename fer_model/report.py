"""report.md, report.html and confusion-matrix PNGs, rendered from the metrics `evaluate` returns.

report.md links the PNGs beside it (for people browsing the folder); report.html is the same
report as one file with the PNGs inlined, which is what the KFP UI can show.

Plots are drawn on a bare `Figure` with the Agg canvas, never through pyplot: a library must not
switch the process's matplotlib backend or leak global figures, and Agg needs no display.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_model.artifact_files import REPORT_FILE, EvaluationMetrics, FairnessTable, ModelArtifactConfig, TaskMetrics
from fer_model.errors import DataError
from fer_model.html_page import markdown_to_html

logger = logging.getLogger(__name__)

#: The self-contained report (images inlined) next to report.md.
REPORT_HTML_FILE = "report.html"


def confusion_png_name(task: str) -> str:
    """File name of a task's confusion-matrix plot inside the evaluation folder."""
    return f"confusion_{task}.png"


def plot_confusion(
    cm: np.ndarray | Sequence[Sequence[int]], classes: Sequence[str], *, title: str, path: str | os.PathLike[str]
) -> Path:
    """Save a row-normalised confusion matrix (rows = true class) with class names and counts.

    Rows are normalised so each cell reads as "share of this true class predicted as that"; this
    keeps rare classes (disgust, 70+) as readable as common ones. Each cell also shows its count.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(cm, dtype=np.int64)
    n = len(classes)
    if counts.shape != (n, n):
        raise DataError(f"confusion matrix for {title!r} must be {n}x{n} for classes {list(classes)}, "
                        f"got shape {counts.shape}")
    row_sums = counts.sum(axis=1, keepdims=True)
    # A true class with no samples keeps an all-zero row instead of a division by zero.
    share = np.divide(counts, row_sums, out=np.zeros(counts.shape, dtype=np.float64), where=row_sums > 0)

    side = 1.2 + 0.75 * n
    fig = Figure(figsize=(side + 1.5, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(n), labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            # Dark text on light cells, light text on dark ones.
            colour = "white" if share[i, j] > 0.5 else "black"
            ax.text(j, i, f"{share[i, j]:.2f}\n({counts[i, j]})", ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _task_table(tasks: Mapping[str, TaskMetrics]) -> list[str]:
    lines = ["| task | accuracy | macro-F1 | labelled | unlabelled (excluded) |", "| --- | --- | --- | --- | --- |"]
    for name, t in tasks.items():
        lines.append(f"| {name} | {_fmt(t.accuracy)} | {_fmt(t.macro_f1)} | {t.n_labelled} | {t.n_unlabelled} |")
    return lines


def _training_copies(metrics: EvaluationMetrics) -> list[str]:
    """The scores without the faces that copy a training face (nothing when none was looked for)."""
    copies = metrics.training_copies
    if copies is None:
        return []
    if not copies.total:
        looked_for = "an exact copy" if copies.n_near is None else "an exact or near copy"
        return ["", f"No scored face is {looked_for} of a training face."]
    lines = [f"Of the {metrics.num_samples} scored faces, {copies.describe()}, which a model can answer from "
             "memory. Without them:", "",
             "| task | accuracy | labelled |", "| --- | --- | --- |"]
    lines += [f"| {name} | {_fmt(t.accuracy)} | {t.n_labelled} |" for name, t in copies.without.items()]
    return ["", *lines]


def _per_class_table(name: str, task: TaskMetrics) -> list[str]:
    if not task.per_class:
        return []
    lines = [f"**{name}**", "", "| class | precision | recall | F1 | support |", "| --- | --- | --- | --- | --- |"]
    for cls, m in task.per_class.items():
        lines.append(f"| {cls} | {_fmt(m.precision)} | {_fmt(m.recall)} | {_fmt(m.f1)} | {m.support} |")
    return [*lines, ""]


def _fairness_table(fairness: FairnessTable) -> list[str]:
    if not fairness:
        return ["The model has no emotion head, so there is no per-group emotion accuracy."]
    lines = ["| attribute | group | n | emotion accuracy |", "| --- | --- | --- | --- |"]
    for attribute, groups in fairness.items():
        for group, g in groups.items():
            lines.append(f"| {attribute} | {group} | {g.n} | {_fmt(g.emotion_accuracy)} |")
    return lines


def _settings(title: str, values: Mapping[str, Any]) -> list[str]:
    """One settings group as a two-column table (numbers rounded, structures as compact JSON)."""
    lines = [f"**{title}**", "", "| setting | value |", "| --- | --- |"]
    for key, value in values.items():
        shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value, sort_keys=True)
        lines.append(f"| {key} | {shown} |")
    return [*lines, ""]


def _model_section(metrics: EvaluationMetrics, model_config: ModelArtifactConfig | None) -> list[str]:
    model = metrics.model
    match = model.dataset_matches
    lines = [
        f"- model: `{model.path}`",
        f"- trained on dataset manifest sha256: `{model.dataset_manifest_sha256}`",
        f"- scored faces are the training dataset's {metrics.split} split: "
        f"{'yes' if match else 'no' if match is False else 'unknown'}",
        f"- scored faces and labels sha256: `{model.evaluated_split_sha256 or 'not recorded'}`",
        f"- loss weights: {json.dumps(dict(model.loss_weights), sort_keys=True)}",
    ]
    if model_config is None:
        return lines
    # config.json stores a 0-based index; people count epochs from 1.
    lines += [f"- best epoch: {model_config.best_epoch + 1} of {model_config.epochs_run}", ""]
    for values, title in ((model_config.validation, "Validation metrics at the best epoch"),
                          (model_config.model, "Model"), (model_config.training, "Training"),
                          (model_config.alignment, "Alignment")):
        if values:
            lines += _settings(title, values)
    return lines


def write_report(
    metrics: EvaluationMetrics, *, out_dir: str | os.PathLike[str], model_config: ModelArtifactConfig | None = None
) -> Path:
    """Write one confusion PNG per task with labelled samples, report.md linking them, report.html inlining them.

    Args:
        metrics: What `fer_model.evaluation.evaluate` builds (the content of metrics.json).
        out_dir: Folder to write into (created if missing).
        model_config: The model artifact's config.json, summarised at the end of the report.

    Returns:
        Path of report.md.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = metrics.tasks
    lines = [
        "# fer-mtl evaluation report",
        "",
        f"Split `{metrics.split}`, {metrics.num_samples} samples. Samples without a label for a "
        "task (-1) are excluded from that task's metrics and counted as unlabelled.",
        "",
        "## Per-task metrics",
        "",
        *_task_table(tasks),
        *_training_copies(metrics),
        "",
        "## Per-class metrics",
        "",
    ]
    for name, task in tasks.items():
        lines += _per_class_table(name, task)
    lines += ["## Emotion accuracy per group", "", *_fairness_table(metrics.fairness), ""]
    lines += ["## Confusion matrices", "", "Rows are true classes, normalised to 1; cells show share and count.", ""]
    for name, task in tasks.items():
        if task.n_labelled == 0:
            lines += [f"- {name}: no labelled samples in this split, no confusion matrix.", ""]
            continue
        png = plot_confusion(task.confusion_matrix, task.classes, title=f"{name} ({metrics.split})",
                             path=out / confusion_png_name(name))
        lines += [f"### {name}", "", f"![{name} confusion matrix]({png.name})", ""]
    lines += ["## Model", "", *_model_section(metrics, model_config), ""]
    path = out / REPORT_FILE
    text = "\n".join(lines)
    path.write_text(text)
    page = markdown_to_html(text, images_dir=out, title=f"fer-mtl evaluation report ({metrics.split})")
    (out / REPORT_HTML_FILE).write_text(page, encoding="utf-8")
    logger.info("wrote %s and %s", path, REPORT_HTML_FILE)
    return path
