"""Model cards are rendered from the artifact's metrics and config, so their numbers cannot drift."""

import json
import shutil

import pytest

from fer_model.errors import ArtifactError
from fer_model.model_card import EXPERIMENT_FILE, render_model_card, write_model_card


@pytest.fixture(scope="module")
def carded_model(tiny_model_dir, sample_dataset_dir, tmp_path_factory):
    from fer_model.evaluation import evaluate

    root = tmp_path_factory.mktemp("carded") / "model"
    shutil.copytree(tiny_model_dir, root)
    metrics = evaluate(model_dir=root, dataset_dir=sample_dataset_dir, out_dir=root.parent / "eval", split="test")
    (root / "metrics.json").write_text(json.dumps(metrics.to_dict()))
    return root, metrics.to_dict()


def test_card_quotes_every_task_metric_and_the_licence(carded_model):
    root, metrics = carded_model
    card = write_model_card(root).read_text()
    for task, m in metrics["tasks"].items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {task} |"))
        assert f"{100 * m['accuracy']:.2f}%" in row and f"| {m['n_labelled']} |" in row
    assert "non-commercial" in card
    config = json.loads((root / "config.json").read_text())
    assert f"width multiplier {config['model']['width']}" in card


def test_card_changes_when_the_metrics_change(carded_model, tmp_path):
    root, metrics = carded_model
    copy = tmp_path / "model"
    shutil.copytree(root, copy)
    changed = json.loads(json.dumps(metrics))
    changed["tasks"]["emotion"]["accuracy"] = 0.123456
    (copy / "metrics.json").write_text(json.dumps(changed))
    assert "12.35%" in render_model_card(copy)
    assert render_model_card(copy) != render_model_card(root)


def test_predicted_group_table_and_training_environment(carded_model, tmp_path):
    root, metrics = carded_model
    copy = tmp_path / "model"
    shutil.copytree(root, copy)
    changed = json.loads(json.dumps(metrics))
    changed["fairness_by_predicted_group"] = {
        "gender": {"male": {"n": 10, "emotion_accuracy": 0.7}, "female": {"n": 0, "emotion_accuracy": None}}
    }
    (copy / "metrics.json").write_text(json.dumps(changed))
    (copy / EXPERIMENT_FILE).write_text(json.dumps({"environment": {"backend": "jax", "device": "GPU X",
                                                                     "machine": "lab"}}))
    card = render_model_card(copy)
    assert "| gender | male | 10 | 70.00% |" in card and "| gender | female | 0 | n/a |" in card
    assert "Trained with Keras on jax, GPU X (lab)" in card


def test_card_without_metrics_says_what_is_missing(tiny_model_dir):
    with pytest.raises(ArtifactError, match=r"no metrics.json at .*re-create it with `fer-mtl evaluate`"):
        render_model_card(tiny_model_dir)


def test_card_gives_the_scores_without_training_copies_when_there_are_some(carded_model, tmp_path):
    root, metrics = carded_model
    assert metrics["training_copies"]["n"] == 0  # the synthetic sample repeats no face
    assert "copies of training faces" not in render_model_card(root)
    copy = tmp_path / "model"
    shutil.copytree(root, copy)
    changed = json.loads(json.dumps(metrics))
    changed["training_copies"] = {"n": 7, "without": {"emotion": {"n_labelled": 40, "accuracy": 0.55},
                                                      "age": {"n_labelled": 0, "accuracy": None}}}
    (copy / "metrics.json").write_text(json.dumps(changed))
    card = render_model_card(copy)
    assert f"Of the {metrics['num_samples']} held-out faces, 7 are exact copies of training faces: FER2013" in card
    # Near copies, when the dataset was prepared looking for them, are named beside the exact ones.
    changed["training_copies"]["n_near"] = 1
    (copy / "metrics.json").write_text(json.dumps(changed))
    assert ("7 are exact copies of training faces and 1 more is a near copy (the same photo re-cropped, "
            "re-encoded or re-lit): FER2013") in render_model_card(copy)
    assert "Without them: emotion 55.00% (40 faces), age n/a (0 faces)." in card
