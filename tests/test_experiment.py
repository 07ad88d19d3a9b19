"""The real-faces comparison machinery, on the synthetic sample dataset."""

import dataclasses
import json

import numpy as np
import pytest

from fer_model.dataset import load_dataset
from fer_model.errors import ConfigError
from fer_model.experiment import labelled_view, run_one, standard_runs, write_results_table
from fer_model.model import ModelConfig
from fer_model.tasks import MISSING
from fer_model.training import TrainConfig


def _runs(*, width=0.125, epochs=2, tuned=None):
    return {r.name: r for r in standard_runs(model_config=ModelConfig(width=width),
                                             train_config=TrainConfig(epochs=epochs, batch_size=64, verbose=0),
                                             tuned_loss_weights=tuned)}


def test_standard_runs_are_the_papers_comparison():
    runs = _runs(width=0.5, tuned={"emotion": 3.0, "age": 1.0})
    assert runs["single_task"].model_config.tasks == ("emotion",)
    assert runs["multi_task"].train_config.loss_weights == {"emotion": 2.0, "gender": 0.1, "race": 1.5, "age": 4.0}
    assert runs["multi_task_tuned"].train_config.loss_weights == {"emotion": 3.0, "age": 1.0}
    assert runs["single_task"].model_config.width == runs["multi_task"].model_config.width == 0.5
    assert "multi_task_tuned" not in _runs()


def test_labelled_view_keeps_only_samples_with_a_label_for_the_tasks(sample_dataset_dir):
    dataset = load_dataset(sample_dataset_dir)
    view = labelled_view(dataset, ["gender"])
    assert len(view) == int((np.asarray(dataset.labels["gender"]) != MISSING).sum()) < len(dataset)
    assert (view.labels["gender"] != MISSING).all()


def test_run_one_trains_scores_and_tabulates(sample_dataset_dir, tmp_path):
    spec = _runs()["multi_task"]
    row = run_one(spec, dataset_dir=sample_dataset_dir, out_dir=tmp_path, machine="test")
    saved = json.loads((tmp_path / "multi_task" / "result.json").read_text())
    assert saved == json.loads(json.dumps(row))
    assert row["epochs_run"] == 2 and row["environment"]["machine"] == "test"
    for task in ("emotion", "gender", "race", "age"):
        assert 0.0 <= row[f"{task}_accuracy"] <= 1.0
    assert (tmp_path / "multi_task" / "model" / "config.json").is_file()
    groups = row["emotion_by_predicted_group"]
    assert set(groups) == {"gender", "race", "age"}
    assert sum(g["n"] for g in groups["age"].values()) == row["test_counts"]["emotion"]
    md, _ = write_results_table(tmp_path)
    line = next(ln for ln in md.read_text().splitlines() if ln.startswith("| multi_task |"))
    assert f"{100 * row['emotion_accuracy']:.2f}" in line


def test_time_limit_of_the_recipe_stops_a_run_after_the_first_epoch_past_it(sample_dataset_dir, tmp_path):
    spec = _runs(epochs=50)["single_task"]
    spec = dataclasses.replace(spec, train_config=dataclasses.replace(spec.train_config, time_limit_s=1e-6))
    row = run_one(spec, dataset_dir=sample_dataset_dir, out_dir=tmp_path)
    assert row["epochs_run"] == 1
    assert row["training"]["time_limit_s"] == 1e-6  # the result row records the budget it ran under


def test_table_without_results_says_how_to_make_them(tmp_path):
    with pytest.raises(ConfigError, match="fer-mtl experiment run"):
        write_results_table(tmp_path)
