"""Each KFP component called through `.python_func`, with artifacts pointing into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kfp import dsl

import components
from components import evaluate, prepare, train, worker_indices
from fer_model.dataset import load_dataset, write_dataset
from fer_model.errors import ConfigError
from fer_model.tasks import DEFAULT_LOSS_WEIGHTS, TASKS
from tests._fixtures.models import pattern_dataset


def _artifact(cls: type, root: Path, name: str) -> Any:
    """An output artifact whose path is a not-yet-existing location under `root` (as KFP gives it)."""
    return cls(name=name, uri=str(root / name))


@pytest.fixture(scope="module")
def pattern_dataset_artifact(tmp_path_factory: pytest.TempPathFactory) -> dsl.Dataset:
    ds = pattern_dataset(n_train=96, n_val=32, n_test=40, seed=3)
    path = write_dataset(tmp_path_factory.mktemp("ds") / "dataset", images=ds.images, labels=ds.labels, split=ds.split)
    return dsl.Dataset(name="dataset", uri=str(path))


@pytest.fixture(scope="module")
def trained(pattern_dataset_artifact: dsl.Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of the train component (tiny width, two epochs), shared by the train and evaluate tests."""
    root = tmp_path_factory.mktemp("train")
    model, metrics = _artifact(dsl.Model, root, "model"), _artifact(dsl.Metrics, root, "metrics")
    weights = {"emotion": 3.0, "age": 0.5}
    train.python_func(
        dataset=pattern_dataset_artifact, model=model, metrics=metrics,
        model_config=json.dumps({"width": 0.125}), train_config=json.dumps({"epochs": 2, "batch_size": 32, "seed": 1}),
        loss_weights=json.dumps(weights),
    )
    return {"model": model, "metrics": metrics, "weights": weights}


def test_prepare_generates_sample_data_into_a_dataset_artifact(tmp_path: Path) -> None:
    out = _artifact(dsl.Dataset, tmp_path, "dataset")
    prepare.python_func(dataset=out, sample_n=28, seed=5, workers=1)
    ds = load_dataset(out.path)  # verifies format version and array hashes
    assert len(ds) == out.metadata["num_samples"] == ds.manifest["num_samples"] > 0
    assert sum(out.metadata[f"num_{s}"] for s in ("train", "validation", "test")) == len(ds)
    assert out.metadata["sources"] == ["sample-data:n=28,seed=5"]
    assert out.metadata["format"] == "fer-mtl-dataset/v2"
    assert out.metadata["num_test_in_train"] == ds.manifest["split_overlap"]["test_in_train"]
    assert "num_train_copies_dropped" not in out.metadata
    # The generated sources are scratch: nothing but the artifact is left beside it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_prepare_reads_listed_sources(tmp_path: Path) -> None:
    from fer_model.sample_data import write_sample_data

    written = write_sample_data(tmp_path / "raw", n=14, seed=2)
    out = _artifact(dsl.Dataset, tmp_path, "dataset")
    prepare.python_func(dataset=out, sources=" , ".join(written["sources"]) + ",",
                        align_config=json.dumps({"eye_alignment": False}), drop_training_copies=True,
                        near_copies=True)
    assert out.metadata["sources"] == written["sources"]
    manifest = load_dataset(out.path).manifest
    # Asked to drop training copies, near ones too: each source counts its own, the metadata their sum
    # (generated faces repeat none exactly; drawn from one template, some pass as near copies).
    assert manifest["prepare"]["near_copies"] is True
    assert out.metadata["num_train_copies_dropped"] == sum(s["train_copies_dropped"] for s in manifest["sources"])
    assert out.metadata["num_validation_near_train"] == manifest["split_overlap"]["validation_near_train"] == 0
    assert {s["kind"] for s in manifest["sources"]} >= {"fer2013-csv", "rafdb"}
    assert manifest["alignment"]["config"]["eye_alignment"] is False
    assert all(s["eyes_found"] == 0 for s in manifest["alignment"]["per_source"].values())


def test_prepare_finds_crop_eyes_as_its_align_config_says(tmp_path: Path) -> None:
    from fer_model.sample_data import write_sample_data

    written = write_sample_data(tmp_path / "raw", n=14, seed=2)
    fer2013 = [s for s in written["sources"] if s.startswith("fer2013-csv:")]
    faces = {}
    for crop_eyes in ("haar", "blazeface"):
        out = _artifact(dsl.Dataset, tmp_path, crop_eyes)
        prepare.python_func(dataset=out, sources=",".join(fer2013), align_config=json.dumps({"crop_eyes": crop_eyes}))
        ds = load_dataset(out.path)
        assert ds.manifest["alignment"]["config"]["crop_eyes"] == crop_eyes
        faces[crop_eyes] = np.array(ds.images)
    # The setting reached the aligner, not only the manifest: other eyes, other rotations.
    assert faces["haar"].shape == faces["blazeface"].shape and not np.array_equal(faces["haar"], faces["blazeface"])


def test_prepare_refuses_an_unknown_align_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown AlignConfig settings"):
        prepare.python_func(dataset=_artifact(dsl.Dataset, tmp_path, "dataset"), sample_n=14,
                            align_config=json.dumps({"crop_eye": "blazeface"}))


def test_prepare_without_sources_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sources"):
        prepare.python_func(dataset=_artifact(dsl.Dataset, tmp_path, "dataset"), sources=" ,", sample_n=0)


@pytest.mark.slow
def test_train_writes_a_model_artifact_with_metrics(trained: dict[str, Any]) -> None:
    model, metrics = trained["model"], trained["metrics"]
    config = json.loads((Path(model.path) / "config.json").read_text())
    # The JSON parameter is laid over the paper's weights, and that is what was trained with.
    expected = {**DEFAULT_LOSS_WEIGHTS, **trained["weights"]}
    assert config["loss_weights"] == pytest.approx(expected)
    assert model.metadata["loss_weights"] == pytest.approx(expected)
    assert config["model"]["width"] == 0.125
    assert (Path(model.path) / "model.keras").is_file()
    history = json.loads((Path(model.path) / "history.json").read_text())
    assert metrics.metadata["epochs_run"] == len(history["loss"]) == 2
    best = metrics.metadata["best_epoch"]
    assert metrics.metadata["val_emotion_accuracy"] == pytest.approx(history["val_emotion_accuracy"][best])
    assert 0.0 <= model.metadata["val_emotion_accuracy"] <= 1.0
    assert model.metadata["dataset_manifest_sha256"] == config["dataset_manifest_sha256"]


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", '"emotion"'])
def test_train_rejects_bad_loss_weights(pattern_dataset_artifact: dsl.Dataset, tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="loss_weights"):
        train.python_func(
            dataset=pattern_dataset_artifact, model=_artifact(dsl.Model, tmp_path, "model"),
            metrics=_artifact(dsl.Metrics, tmp_path, "metrics"), train_config='{"epochs": 1}', loss_weights=bad,
        )
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_evaluate_logs_metrics_confusion_matrices_and_report(
    trained: dict[str, Any], pattern_dataset_artifact: dsl.Dataset, tmp_path: Path
) -> None:
    cms = {t.name: _artifact(dsl.ClassificationMetrics, tmp_path, f"{t.name}_cm") for t in TASKS}
    metrics = _artifact(dsl.Metrics, tmp_path, "metrics")
    report = _artifact(dsl.HTML, tmp_path, "report")
    accuracy = evaluate.python_func(
        model=trained["model"], dataset=pattern_dataset_artifact, metrics=metrics,
        emotion_cm=cms["emotion"], gender_cm=cms["gender"], race_cm=cms["race"], age_cm=cms["age"],
        report=report, split="test",
    )
    written = json.loads((Path(metrics.path) / "metrics.json").read_text())
    assert written["split"] == "test" and written["num_samples"] == 40
    assert accuracy == pytest.approx(written["tasks"]["emotion"]["accuracy"])
    assert metrics.metadata["emotion_accuracy"] == pytest.approx(accuracy)
    copies = written["training_copies"]
    assert metrics.metadata["training_copies"] == copies["n"]
    assert metrics.metadata["emotion_accuracy_without_training_copies"] == pytest.approx(
        copies["without"]["emotion"]["accuracy"])
    for task in TASKS:
        tm = written["tasks"][task.name]
        cm = cms[task.name].metadata["confusionMatrix"]
        assert [s["displayName"] for s in cm["annotationSpecs"]] == list(task.classes)
        rows = np.array([r["row"] for r in cm["rows"]])
        assert rows.tolist() == tm["confusion_matrix"]
        assert rows.sum() == tm["n_labelled"] == cms[task.name].metadata["labelled"]
        assert metrics.metadata[f"{task.name}_macro_f1"] == pytest.approx(tm["macro_f1"])
    assert Path(report.path).read_text() == (Path(metrics.path) / "report.html").read_text()
    assert 'src="data:image/png;base64,' in Path(report.path).read_text()
    assert (Path(metrics.path) / "confusion_emotion.png").is_file()


@pytest.mark.parametrize("name", components.__all__)
def test_shipped_component_source_loads_on_its_own(name: str) -> None:
    """KFP ships only the function's source to the pod; it must not lean on module globals
    (an image constant as a default, `from __future__ import annotations`)."""
    comp = getattr(components, name)
    source = comp.component_spec.implementation.container.command[-1]
    namespace: dict[str, Any] = {"__name__": "ephemeral_component"}
    exec(compile(source, f"<{name} as shipped>", "exec"), namespace)  # what executor_main imports
    assert callable(namespace[name])
    assert comp.component_spec.implementation.container.image.startswith("ghcr.io/fer-mtl/")


def test_worker_indices() -> None:
    assert worker_indices.python_func(n=3) == [0, 1, 2]
    with pytest.raises(ConfigError, match="tune_workers"):
        worker_indices.python_func(n=0)


def test_tune_worker_trials_train_with_the_runs_recipe(
    pattern_dataset_artifact: dsl.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each trial trains with the train step's settings; only the sampled loss weights and the
    tuning budget (epochs, width) differ. (Trials once ran at batch 32 / lr 3e-4 whatever train used.)"""
    import fer_model.tuning.study as study
    from components import tune_worker
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig
    from fer_model.tuning import TrialResult

    seen: list[tuple[ModelConfig, TrainConfig]] = []

    class Recorder:  # stands in for FitTrainer: records what each trial would train with
        def __init__(self, dataset_dir: str) -> None:
            assert dataset_dir == pattern_dataset_artifact.path

        def __call__(self, *, model_config, train_config, objective, report) -> TrialResult:
            seen.append((model_config, train_config))
            return TrialResult(value=0.5)

    monkeypatch.setattr(study, "FitTrainer", Recorder)
    model = ModelConfig(width=0.5, augment=True, tasks=("emotion", "age"))
    recipe = TrainConfig(epochs=40, batch_size=128, learning_rate=1e-3, label_smoothing=0.1, seed=4)
    ran = tune_worker.python_func(
        dataset=pattern_dataset_artifact, storage_url=str(tmp_path / "journal.log"), study_name="recipe",
        worker_index=0, tune_config=json.dumps({"n_trials": 2, "epochs": 3, "width": 0.25}),
        model_config=model.to_json(), train_config=recipe.to_json(),
    )
    assert ran == len(seen) == 2
    for trial_model, trial_train in seen:
        assert trial_model == ModelConfig(width=0.25, augment=True, tasks=("emotion", "age"))
        assert set(trial_train.loss_weights) == {"emotion", "gender", "race", "age"}
        assert trial_train.loss_weights != recipe.loss_weights  # sampled for emotion and age
        assert {t: trial_train.loss_weights[t] for t in ("gender", "race")} == {"gender": 0.1, "race": 1.5}
        expected = TrainConfig.from_dict(
            {**recipe.to_dict(), "epochs": 3, "verbose": 0, "loss_weights": trial_train.loss_weights}
        )
        assert trial_train == expected


@pytest.mark.parametrize(("name", "output"), [("evaluate", "report"), ("select_best", "study_report")])
def test_reports_are_html_artifacts_the_kfp_ui_renders(name: str, output: str) -> None:
    assert getattr(components, name).component_spec.outputs[output].type == "system.HTML@0.0.1"
