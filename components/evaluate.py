"""KFP component: model artifact + dataset artifact -> metrics, confusion matrices, report."""

from kfp import dsl
from kfp.dsl import HTML, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    metrics: Output[Metrics],
    emotion_cm: Output[ClassificationMetrics],
    gender_cm: Output[ClassificationMetrics],
    race_cm: Output[ClassificationMetrics],
    age_cm: Output[ClassificationMetrics],
    report: Output[HTML],
    split: str = "test",
) -> float:
    """Score the model on one split of the dataset.

    Args:
        model: A model artifact folder (from `train`).
        dataset: The dataset artifact it is scored on.
        metrics: A folder holding metrics.json, report.md, report.html and confusion_<task>.png
            (what the gate reads), with accuracy and macro-F1 per task as scalar metrics for the KFP UI,
            and the accuracy without faces that copy training faces (`training_copies`).
        emotion_cm: Emotion confusion matrix (likewise gender_cm, race_cm, age_cm); a task the
            model has no head for, or with no labelled sample in the split, stays empty.
        report: The report as one HTML file, confusion images inlined, so the KFP UI shows it whole.
        split: "test" (default), "validation" or "train".

    Returns:
        Emotion accuracy on the split.
    """
    import logging
    import shutil
    from pathlib import Path

    from fer_model.evaluation import evaluate as score
    from fer_model.report import REPORT_HTML_FILE

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = score(model_dir=model.path, dataset_dir=dataset.path, out_dir=metrics.path, split=split)
    metrics.log_metric("num_samples", result.num_samples)
    copies = result.training_copies
    if copies is not None:
        metrics.log_metric("training_copies", copies.n)
        if copies.n_near is not None:
            metrics.log_metric("near_training_copies", copies.n_near)
        for task, score in copies.without.items():
            if score.accuracy is not None:
                metrics.log_metric(f"{task}_accuracy_without_training_copies", score.accuracy)
    outputs = {"emotion": emotion_cm, "gender": gender_cm, "race": race_cm, "age": age_cm}
    for task, out in outputs.items():
        task_metrics = result.task(task)
        if task_metrics is None or not task_metrics.n_labelled:
            out.metadata["labelled"] = 0
            continue
        for key in ("accuracy", "macro_f1"):
            if getattr(task_metrics, key) is not None:
                metrics.log_metric(f"{task}_{key}", getattr(task_metrics, key))
        out.log_confusion_matrix(list(task_metrics.classes), [list(row) for row in task_metrics.confusion_matrix])
        out.metadata["labelled"] = task_metrics.n_labelled
        out.metadata["accuracy"] = task_metrics.accuracy
    Path(report.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(metrics.path) / REPORT_HTML_FILE, report.path)
    emotion = result.task("emotion")
    return float(emotion.accuracy or 0.0) if emotion else 0.0
