"""Evaluation: metrics dict from hand-made arrays, the report, and `evaluate` on real fixture artifacts."""

import json
import shutil

import cv2
import numpy as np
import pytest

from fer_model.artifact_files import EvaluationMetrics, ModelArtifactConfig, ModelInfo
from fer_model.errors import ConfigError, DataError
from fer_model.evaluation import build_metrics
from fer_model.report import confusion_png_name, write_report
from fer_model.split_overlap import Copies
from fer_model.tasks import TASK_NAMES, get_task

# Five samples; -1 = unlabelled. Emotion right on samples 0, 1; wrong on 2 and 4; 3 is unlabelled.
LABELS = {
    "emotion": np.array([0, 1, 2, -1, 0]),
    "gender": np.array([0, 0, 1, 1, -1]),
    "race": np.array([-1, -1, -1, -1, -1]),
    "age": np.array([2, 2, 2, 3, 4]),
}
PREDICTIONS = {"emotion": np.array([0, 1, 0, 1, 1]), "race": np.array([0, 1, 2, 0, 1])}


def _valid_png(path):
    image = cv2.imread(str(path))
    return image is not None and image.ndim == 3 and min(image.shape[:2]) > 100


def test_build_metrics_scores_only_model_tasks_and_counts_unlabelled():
    m = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test")
    assert set(m.tasks) == {"emotion", "race"}
    emotion = m.tasks["emotion"]
    assert (emotion.n_labelled, emotion.n_unlabelled) == (4, 1)
    assert emotion.accuracy == pytest.approx(0.5)
    assert emotion.classes == get_task("emotion").classes
    assert np.asarray(emotion.confusion_matrix).sum() == 4
    assert m.num_samples == 5


def test_task_without_labels_is_reported_not_a_crash():
    race = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test").tasks["race"]
    assert race.accuracy is None and race.macro_f1 is None
    assert (race.n_labelled, race.n_unlabelled) == (0, 5)


def test_fairness_by_hand():
    fairness = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test").to_dict()["fairness"]
    # male: samples 0, 1 (both right); female: sample 2 (wrong), sample 3 has no emotion label.
    assert fairness["gender"]["male"] == {"n": 2, "emotion_accuracy": 1.0}
    assert fairness["gender"]["female"] == {"n": 1, "emotion_accuracy": 0.0}
    assert fairness["gender"]["unsure"] == {"n": 0, "emotion_accuracy": None}
    # age 20-39: samples 0, 1, 2 -> 2 of 3; 40-69: sample 3 lacks emotion; 70+: sample 4 wrong.
    assert fairness["age"]["20-39"]["emotion_accuracy"] == pytest.approx(2 / 3)
    assert fairness["age"]["40-69"]["n"] == 0
    assert fairness["age"]["70+"] == {"n": 1, "emotion_accuracy": 0.0}
    assert sum(g["n"] for g in fairness["race"].values()) == 0


def test_fairness_by_predicted_group_by_hand():
    by_predicted = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test").to_dict()[
        "fairness_by_predicted_group"]
    # Only the group heads the model has; race labels are all missing, yet predicted races group emotion.
    assert set(by_predicted) == {"race"}
    assert by_predicted["race"]["caucasian"] == {"n": 1, "emotion_accuracy": 1.0}  # sample 3 lacks emotion
    assert by_predicted["race"]["african_american"] == {"n": 2, "emotion_accuracy": 0.5}
    assert by_predicted["race"]["asian"] == {"n": 1, "emotion_accuracy": 0.0}


def test_no_emotion_head_means_no_fairness_table():
    m = build_metrics(predictions={"race": PREDICTIONS["race"]}, labels=LABELS, split="test")
    assert m.fairness == {} and m.fairness_by_predicted_group == {}


def test_length_mismatch_is_rejected():
    with pytest.raises(DataError, match="same length"):
        build_metrics(predictions={"emotion": np.array([0, 1])}, labels=LABELS, split="test")
    with pytest.raises(DataError, match="same length"):
        build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test",
                      training_copies=Copies(exact=np.array([True]), near=np.array([False])))


def test_scores_without_training_copies_by_hand(tmp_path):
    # Sample 0 copies a training face exactly, 4 nearly. Left: 1 (emotion right), 2 (wrong), 3 (no emotion label).
    copies = Copies(exact=np.array([True, False, False, False, False]),
                    near=np.array([False, False, False, False, True]))
    m = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test", training_copies=copies)
    assert m.training_copies is not None and (m.training_copies.n, m.training_copies.n_near) == (1, 1)
    emotion, race = m.training_copies.without["emotion"], m.training_copies.without["race"]
    assert (emotion.n_labelled, emotion.accuracy) == (2, 0.5)
    assert (race.n_labelled, race.accuracy) == (0, None)
    assert m.tasks["emotion"].accuracy == pytest.approx(0.5)  # the full figures are unchanged
    assert EvaluationMetrics.from_dict(m.to_dict()) == m
    text = write_report(m, out_dir=tmp_path).read_text()
    assert "Of the 5 scored faces, 1 is an exact copy of training faces and 1 more is a near copy" in text
    assert "| emotion | 0.500 | 2 |" in text and "| race | n/a | 0 |" in text
    # Near copies looked for and none found: the one line says which kinds were looked for.
    none = Copies(exact=np.zeros(5, dtype=bool), near=np.zeros(5, dtype=bool))
    clean = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test", training_copies=none)
    assert (clean.training_copies.n, clean.training_copies.n_near) == (0, 0)
    assert "No scored face is an exact or near copy of a training face." in write_report(
        clean, out_dir=tmp_path / "clean").read_text()
    # Not looked for (the train split): no section, and none in the file.
    plain = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="train")
    assert plain.training_copies is None and "training_copies" not in plain.to_dict()


def test_report_embeds_pngs_and_skips_unlabelled_task(tmp_path):
    m = build_metrics(predictions=PREDICTIONS, labels=LABELS, split="test",
                      model_info=ModelInfo(loss_weights={"emotion": 1.0}))
    config = ModelArtifactConfig(
        library_version="0.1.0", keras_version="3", backend="tensorflow",
        tasks={"emotion": get_task("emotion").classes}, input_size=50, input_name="image", alignment={}, model={},
        training={"lr": 0.001}, loss_weights={"emotion": 1.0}, dataset_manifest_sha256=None, best_epoch=3,
        epochs_run=9, validation={}, saved_model=None,
    )
    report = write_report(m, out_dir=tmp_path, model_config=config)
    text = report.read_text()
    assert f"]({confusion_png_name('emotion')})" in text
    assert _valid_png(tmp_path / confusion_png_name("emotion"))
    # race has no labelled sample: no (meaningless all-zero) plot, and the report says why.
    assert not (tmp_path / confusion_png_name("race")).exists()
    assert "race: no labelled samples" in text
    assert "| gender | male | 2 | 1.000 |" in text
    assert "best epoch: 4 of 9" in text
    assert "| lr | 0.001 |" in text


# --- evaluate() on the fixture artifacts (a tiny trained model and a prepared sample dataset) ---


@pytest.fixture(scope="module")
def evaluated(tiny_model_dir, sample_dataset_dir, tmp_path_factory):
    from fer_model.evaluation import evaluate

    out = tmp_path_factory.mktemp("eval")
    metrics = evaluate(model_dir=tiny_model_dir, dataset_dir=sample_dataset_dir, out_dir=out, batch_size=7)
    return metrics, out


def test_metrics_json_matches_schema_and_return_value(evaluated, tiny_model_dir):
    from fer_model.model_artifact import read_model_config

    metrics, out = evaluated
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == metrics.to_dict()
    assert EvaluationMetrics.read(out) == metrics
    assert {"split", "num_samples", "tasks", "fairness", "model"} <= set(on_disk)
    assert on_disk["split"] == "test"
    model_tasks = set(read_model_config(tiny_model_dir).tasks)
    assert set(on_disk["tasks"]) == model_tasks
    for name, t in on_disk["tasks"].items():
        assert {"accuracy", "macro_f1", "n_labelled", "n_unlabelled", "classes", "confusion_matrix"} <= set(t)
        assert t["classes"] == list(get_task(name).classes)
        assert t["accuracy"] is None or 0.0 <= t["accuracy"] <= 1.0
    assert {"dataset_manifest_sha256", "loss_weights"} <= set(on_disk["model"])


def test_counts_match_the_dataset_manifest(evaluated, sample_dataset_dir):
    metrics, _ = evaluated
    manifest = json.loads((sample_dataset_dir / "manifest.json").read_text())
    counts = manifest["counts"]["test"]
    assert metrics.num_samples == counts["total"]
    for name, t in metrics.tasks.items():
        assert t.n_labelled == counts["tasks"][name]["labelled"]
        assert t.n_unlabelled == counts["tasks"][name]["unlabelled"]
        # Confusion rows are the true-class counts the manifest lists.
        rows = np.asarray(t.confusion_matrix).sum(axis=1).tolist()
        assert rows == [counts["tasks"][name]["per_class"][c] for c in t.classes]


def test_fairness_n_add_up(evaluated, sample_dataset_dir):
    from fer_model.dataset import load_dataset

    metrics, _ = evaluated
    if "emotion" not in metrics.tasks:
        pytest.skip("fixture model has no emotion head")
    _, labels = load_dataset(sample_dataset_dir).subset("test")
    for attribute, groups in metrics.fairness.items():
        both = int(((labels["emotion"] != -1) & (labels[attribute] != -1)).sum())
        assert sum(g.n for g in groups.values()) == both


def test_model_info_recognises_its_training_dataset(evaluated, tiny_model_dir, sample_dataset_dir):
    from fer_model.dataset import load_dataset
    from fer_model.model_artifact import read_model_config

    metrics, out = evaluated
    # The fixture model was trained on the fixture dataset, so the manifest hashes agree.
    assert metrics.model.dataset_matches is True
    assert "scored faces are the training dataset's test split: yes" in (out / "report.md").read_text()
    # The synthetic sample repeats no face across splits, and the report says so in one line.
    assert metrics.training_copies is not None and metrics.training_copies.n == 0
    assert metrics.training_copies.n_near is None  # not looked for: the sample's drawn faces would pass
    assert "No scored face is an exact copy of a training face." in (out / "report.md").read_text()
    # Training recorded every split of that dataset by its faces and labels.
    ds = load_dataset(sample_dataset_dir)
    recorded = read_model_config(tiny_model_dir).dataset_split_sha256
    assert recorded == {s: ds.split_sha256(s) for s in ("train", "validation", "test")}
    assert len(set(recorded.values())) == 3


def test_model_info_names_the_scored_faces(evaluated, sample_dataset_dir):
    from fer_model.dataset import load_dataset

    metrics, out = evaluated
    expected = load_dataset(sample_dataset_dir).split_sha256("test")
    assert metrics.model.evaluated_split_sha256 == expected
    assert json.loads((out / "metrics.json").read_text())["model"]["evaluated_split_sha256"] == expected
    assert expected in (out / "report.md").read_text()


def test_gate_compares_evaluations_of_a_reprepared_dataset(evaluated, tiny_model_dir, sample_dataset_dir, tmp_path):
    # The pipeline's next run re-prepares the same sources under another scratch folder: a new
    # manifest, the same test faces. Its candidate must be held to the serving model's numbers.
    from fer_model.dataset import load_dataset, write_dataset
    from fer_model.evaluation import evaluate
    from fer_model.release.gate import decide

    serving, _ = evaluated
    ds = load_dataset(sample_dataset_dir)
    moved = [{**s, "path": "/elsewhere/" + str(i)} for i, s in enumerate(ds.manifest.get("sources") or [{}])]
    again = write_dataset(tmp_path / "again", images=np.asarray(ds.images), labels=ds.labels, split=ds.split,
                          sources=moved, alignment=ds.manifest.get("alignment"))
    candidate = evaluate(model_dir=tiny_model_dir, dataset_dir=again, out_dir=tmp_path / "eval", batch_size=7)
    assert candidate.model.evaluated_dataset_manifest_sha256 != serving.model.evaluated_dataset_manifest_sha256
    # Another manifest, but the split hashes recorded at training time still know the held-out faces.
    assert candidate.model.dataset_matches is True
    key = "emotion_accuracy"
    decision = decide(candidate=candidate, thresholds={key: 0.0}, serving=serving)
    assert decision.numbers["comparable"] is True
    assert decision.numbers["candidate"][key] == decision.numbers["serving"][key]
    assert decision.deploy


@pytest.mark.parametrize(("recorded", "expected", "shown"), [
    ("own", True, "yes"),            # a rebuild: other manifest, same test faces
    ("other", False, "no"),          # the recorded test split differs from the scored faces
    (None, False, "no"),             # a model from before split hashes: the manifest decides
])
def test_dataset_matches_by_the_split_hash_recorded_at_training(tiny_model_dir, sample_dataset_dir, tmp_path,
                                                                recorded, expected, shown):
    from fer_model.dataset import load_dataset, write_dataset
    from fer_model.evaluation import evaluate
    from fer_model.model_artifact import read_model_config

    ds = load_dataset(sample_dataset_dir)
    moved = [{**s, "path": f"/rebuilt/{i}"} for i, s in enumerate(ds.manifest.get("sources") or [{}])]
    rebuilt = write_dataset(tmp_path / "rebuilt", images=np.asarray(ds.images), labels=ds.labels, split=ds.split,
                            sources=moved, alignment=ds.manifest.get("alignment"))
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = read_model_config(model).to_dict()
    if recorded is None:
        del config["dataset_split_sha256"]
    elif recorded == "other":
        config["dataset_split_sha256"]["test"] = ds.split_sha256("validation")
    (model / "config.json").write_text(json.dumps(config))
    metrics = evaluate(model_dir=model, dataset_dir=rebuilt, out_dir=tmp_path / "eval", batch_size=7)
    assert metrics.model.dataset_matches is expected
    assert f"training dataset's test split: {shown}" in (tmp_path / "eval" / "report.md").read_text()


def test_dataset_matches_is_unknown_when_the_model_records_no_training_data(tiny_model_dir, sample_dataset_dir,
                                                                            tmp_path):
    from fer_model.evaluation import evaluate
    from fer_model.model_artifact import read_model_config

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    config = read_model_config(model).to_dict()
    config["dataset_manifest_sha256"] = None
    del config["dataset_split_sha256"]
    (model / "config.json").write_text(json.dumps(config))
    metrics = evaluate(model_dir=model, dataset_dir=sample_dataset_dir, out_dir=tmp_path / "eval", batch_size=7)
    assert metrics.model.dataset_matches is None
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["model"]["dataset_matches"] is None
    assert "training dataset's test split: unknown" in (tmp_path / "eval" / "report.md").read_text()


@pytest.mark.parametrize("near_copies", [False, True])
def test_evaluate_scores_without_the_test_faces_that_copy_training_faces(tiny_model_dir, sample_dataset_dir,
                                                                           tmp_path, near_copies):
    from fer_model.dataset import load_dataset, write_dataset
    from fer_model.evaluation import evaluate, predict_classes
    from fer_model.model_artifact import load_model_artifact
    from fer_model.split_overlap import FaceIndex

    ds = load_dataset(sample_dataset_dir)
    images = np.array(ds.images)
    train, test = ds.indices("train"), ds.indices("test")
    images[test[:3]] = images[train[:3]]  # three test rows now hold training faces
    images[test[3]] = np.clip(images[train[3]] * 0.8 + 30, 0, 255)  # and one holds a training face re-lit
    # The dataset says whether near copies were looked for, and evaluate follows it.
    planted = write_dataset(tmp_path / "planted", images=images, labels=ds.labels, split=ds.split,
                            sources=ds.manifest.get("sources"), alignment=ds.manifest.get("alignment"),
                            extra={"prepare": {"near_copies": True}} if near_copies else None)
    metrics = evaluate(model_dir=tiny_model_dir, dataset_dir=planted, out_dir=tmp_path / "eval", batch_size=7)
    copies = metrics.training_copies
    assert copies is not None and copies.n == 3
    left = np.ones(len(test), dtype=bool)
    left[:3] = False
    if near_copies:
        # The sample's faces are drawn from one template, so some unplanted ones pass as near copies too.
        near = FaceIndex(images).split_copies(ds.split, of="test", among="train", near=True).near
        assert near[3] and copies.n_near == int(near.sum())
        left &= ~near
        assert f"3 are exact copies of training faces and {copies.n_near} more are near copies" in (
            tmp_path / "eval" / "report.md").read_text()
    else:
        assert copies.n_near is None
        assert "3 are exact copies of training faces, which" in (tmp_path / "eval" / "report.md").read_text()
    model = load_model_artifact(tiny_model_dir).model
    rest = test[left]
    predicted = predict_classes(model, images, rest, tasks=tuple(metrics.tasks), batch_size=7)
    for task, score in copies.without.items():
        truth = np.asarray(ds.labels[task])[rest]
        labelled = truth >= 0
        assert score.n_labelled == int(labelled.sum())
        assert score.accuracy == pytest.approx(float((predicted[task][labelled] == truth[labelled]).mean()))
    # Scoring the train split looks for no copies: every face there is its own.
    on_train = evaluate(model_dir=tiny_model_dir, dataset_dir=planted, out_dir=tmp_path / "t", split="train")
    assert on_train.training_copies is None


def test_pngs_and_report(evaluated):
    metrics, out = evaluated
    text = (out / "report.md").read_text()
    for name, t in metrics.tasks.items():
        assert f"| {name} |" in text
        if t.n_labelled:
            assert _valid_png(out / confusion_png_name(name))
            assert confusion_png_name(name) in text


def test_empty_split_names_split_and_counts(tiny_model_dir, tmp_path):
    from fer_model.dataset import write_dataset
    from fer_model.evaluation import evaluate

    n = 4
    data = write_dataset(
        tmp_path / "ds",
        images=np.zeros((n, 50, 50), np.uint8),
        labels={t: np.zeros(n, np.int8) for t in TASK_NAMES},
        split=np.zeros(n, np.uint8),
    )
    with pytest.raises(DataError, match=r"split 'test'.*empty.*train 4, validation 0, test 0"):
        evaluate(model_dir=tiny_model_dir, dataset_dir=data, out_dir=tmp_path / "out")


@pytest.mark.parametrize(("kwargs", "match"), [({"split": "dev"}, "split"), ({"batch_size": 0}, "batch_size")])
def test_bad_arguments(tiny_model_dir, sample_dataset_dir, tmp_path, kwargs, match):
    from fer_model.evaluation import evaluate

    with pytest.raises(ConfigError, match=match):
        evaluate(model_dir=tiny_model_dir, dataset_dir=sample_dataset_dir, out_dir=tmp_path, **kwargs)


def test_evaluate_cli_prints_summary_and_report_path(tiny_model_dir, sample_dataset_dir, tmp_path, capsys):
    from fer_cli import main

    out = tmp_path / "cli_eval"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--dataset", str(sample_dataset_dir), "--out", str(out),
            "--split", "validation"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "validation"
    for name, t in metrics["tasks"].items():
        assert f"{name}" in printed and f"{t['n_labelled']} labelled" in printed
    assert f"report: {out}/report.md" in printed
    assert (out / "report.md").is_file()



def test_html_report_is_one_file_with_the_confusion_images_inlined(evaluated):
    from fer_model.report import REPORT_HTML_FILE
    from tests.test_html_page import decoded_images

    metrics, out = evaluated
    page = (out / REPORT_HTML_FILE).read_text()
    images = decoded_images(page)
    plotted = [name for name, t in metrics.tasks.items() if t.n_labelled]
    assert len(images) == len(plotted) > 0
    # The inlined images are the PNGs written beside report.md, pixel for pixel.
    for name, image in zip(plotted, images, strict=True):
        assert np.array_equal(image, cv2.imread(str(out / confusion_png_name(name)), cv2.IMREAD_UNCHANGED))
    for name in metrics.tasks:
        assert f"<td>{name}</td>" in page
