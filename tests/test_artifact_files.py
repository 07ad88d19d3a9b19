"""The typed metrics.json / config.json contracts: committed files load byte for byte, bad files are named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from fer_model.artifact_files import (
    CONFIG_FILE,
    METRICS_FILE,
    EvaluationMetrics,
    ModelArtifactConfig,
)
from fer_model.errors import ArtifactError
from fer_model.predict import PRETRAINED_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "real_faces" / "results"
COMMITTED_METRICS = sorted([PRETRAINED_DIR / METRICS_FILE, *RESULTS.rglob(METRICS_FILE)])
COMMITTED_CONFIGS = sorted([PRETRAINED_DIR / CONFIG_FILE, *RESULTS.rglob(CONFIG_FILE)])


def _id(path: Path) -> str:
    return str(path.parent.relative_to(ROOT))


def test_the_committed_artifacts_are_found() -> None:
    # Guards the parametrisations below against silently running on nothing.
    assert len(COMMITTED_METRICS) >= 5 and len(COMMITTED_CONFIGS) >= 5


@pytest.mark.parametrize("path", COMMITTED_METRICS, ids=_id)
def test_committed_metrics_load_and_write_back_byte_for_byte(path: Path) -> None:
    metrics = EvaluationMetrics.read(path)
    assert json.dumps(metrics.to_dict(), indent=2) + "\n" == path.read_text()
    assert metrics.task("emotion") is not None and metrics.split == "test"


@pytest.mark.parametrize("path", COMMITTED_CONFIGS, ids=_id)
def test_committed_configs_load_and_write_back_byte_for_byte(path: Path) -> None:
    config = ModelArtifactConfig.read(path.parent)
    assert json.dumps(config.to_dict(), indent=2) + "\n" == path.read_text()
    assert config.input_size == config.alignment["size"]


def test_older_files_without_later_keys_keep_them_absent() -> None:
    # Files written before these keys existed still load, and a round trip does not invent them.
    metrics = json.loads((RESULTS / "cpu" / "multi_task" / METRICS_FILE).read_text())
    config = json.loads((RESULTS / "cpu" / "multi_task" / CONFIG_FILE).read_text())
    assert "fairness_by_predicted_group" not in metrics and "untrained_classes" not in config
    assert "training_copies" not in metrics and EvaluationMetrics.from_dict(metrics).training_copies is None
    assert EvaluationMetrics.from_dict(metrics).fairness_by_predicted_group is None
    assert "untrained_classes" not in ModelArtifactConfig.from_dict(config).to_dict()
    assert ModelArtifactConfig.from_dict(config).dataset_split_sha256 is None
    assert "dataset_split_sha256" not in ModelArtifactConfig.from_dict(config).to_dict()


def test_write_then_read_is_the_identity(tmp_path: Path) -> None:
    metrics = EvaluationMetrics.read(PRETRAINED_DIR)
    written = metrics.write(tmp_path / "eval")
    assert written.name == METRICS_FILE and EvaluationMetrics.read(written.parent) == metrics
    config = ModelArtifactConfig.read(PRETRAINED_DIR)
    config.write(tmp_path)
    assert ModelArtifactConfig.read(tmp_path) == config


def _pretrained(name: str) -> dict[str, Any]:
    return json.loads((PRETRAINED_DIR / name).read_text())


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of `data` with the key at `dotted` set to `value`, or deleted for `...`."""
    out = copy.deepcopy(data)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("split", ..., "lacks the key `split`"),
        ("num_samples", "4387", r"`num_samples` must be an integer, got '4387'"),
        ("tasks.emotion.accuracy", "high", r"`tasks.emotion.accuracy` must be a number or null, got 'high'"),
        ("tasks.gender.n_labelled", True, r"`tasks.gender.n_labelled` must be an integer"),
        ("tasks.age.confusion_matrix", [[1, 2], [3, 4]], r"`tasks.age`: `confusion_matrix` must be 5x5"),
        ("tasks.race.per_class.asian", ..., r"`tasks.race`: `per_class` must list the classes"),
        ("fairness.gender.male.n", None, r"`fairness.gender.male.n` must be an integer"),
        ("model.dataset_matches", "yes", r"`model.dataset_matches` must be true or false or null"),
        ("model.loss_weights", [1, 2], r"`model.loss_weights` must be a JSON object, got list"),
        ("training_copies", {"n": 3}, r"lacks the key `training_copies.without`"),
        ("training_copies", {"n": 3, "without": {"emotion": {"n_labelled": 2, "accuracy": "high"}}},
         r"`training_copies.without.emotion.accuracy` must be a number or null"),
        ("training_copies", {"n": 3, "n_near": 1.5, "without": {}}, r"`training_copies.n_near` must be an integer"),
    ],
)
def test_malformed_metrics_are_rejected_naming_file_and_key(tmp_path: Path, key: str, value: Any, match: str) -> None:
    path = tmp_path / METRICS_FILE
    path.write_text(json.dumps(_set(_pretrained(METRICS_FILE), key, value)))
    with pytest.raises(ArtifactError, match=match) as caught:
        EvaluationMetrics.read(tmp_path)
    assert str(path) in str(caught.value) and "fer-mtl evaluate" in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("format_version", 2, r"model format version 2, this fer-mtl reads version 1; re-train it"),
        ("format", "fer-mtl-dataset", r"is not a fer-mtl-model artifact \(format='fer-mtl-dataset'\)"),
        ("best_epoch", ..., "lacks the key `best_epoch`"),
        ("input_size", 50.5, r"`input_size` must be an integer, got 50.5"),
        ("loss_weights.emotion", "2", r"`loss_weights.emotion` must be a number, got '2'"),
        ("training", None, r"`training` must be a JSON object, got NoneType"),
        ("tasks.race", "caucasian", r"`tasks.race` must be a list of strings"),
        ("tasks.emotion", ["happy", "sad"], r"task 'emotion' with classes \['happy', 'sad'\] .* label order"),
        ("untrained_classes.gender", [0], r"`untrained_classes.gender` must be a list of strings"),
        ("dataset_split_sha256", {"test": "02a7"}, r"`dataset_split_sha256.test` must be a sha256 hex digest"),
        ("dataset_split_sha256", {"test": 7}, r"`dataset_split_sha256.test` must be a string, got 7"),
    ],
)
def test_malformed_configs_are_rejected_naming_file_and_key(tmp_path: Path, key: str, value: Any, match: str) -> None:
    path = tmp_path / CONFIG_FILE
    path.write_text(json.dumps(_set(_pretrained(CONFIG_FILE), key, value)))
    with pytest.raises(ArtifactError, match=match) as caught:
        ModelArtifactConfig.read(tmp_path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(("text", "match"), [("{oops", "cannot be parsed as JSON"), ("[1]", "must be a JSON object")])
def test_files_that_are_not_json_objects_are_rejected(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / METRICS_FILE).write_text(text)
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(ArtifactError, match=match):
        EvaluationMetrics.read(tmp_path)
    with pytest.raises(ArtifactError, match=match):
        ModelArtifactConfig.read(tmp_path)


def test_missing_files_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"no metrics.json at .*pass the file or its folder"):
        EvaluationMetrics.read(tmp_path)
    with pytest.raises(ArtifactError, match=r"config.json is missing \(run `fer-mtl train`\)"):
        ModelArtifactConfig.read(tmp_path)


def test_config_rejects_another_format_when_built_directly() -> None:
    data = ModelArtifactConfig.read(PRETRAINED_DIR)
    with pytest.raises(ArtifactError, match="format version 2"):
        ModelArtifactConfig(**{**data.__dict__, "format_version": 2})


def test_reading_the_contracts_imports_no_numpy_or_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from fer_model.artifact_files import EvaluationMetrics, ModelArtifactConfig; "
        f"EvaluationMetrics.read({str(PRETRAINED_DIR)!r}); ModelArtifactConfig.read({str(PRETRAINED_DIR)!r}); "
        "heavy = [m for m in ('numpy', 'tensorflow', 'keras', 'cv2') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_local_pipeline_run_exposes_the_typed_metrics(tmp_path: Path) -> None:
    import shutil

    from pipelines.runner import collect_outputs

    evaluate = tmp_path / "run" / "evaluate"
    (evaluate / "metrics").mkdir(parents=True)
    (evaluate / "executor_output.json").write_text("{}")
    shutil.copy(PRETRAINED_DIR / METRICS_FILE, evaluate / "metrics" / METRICS_FILE)
    run = collect_outputs(tmp_path / "run")
    assert run.metrics == EvaluationMetrics.read(PRETRAINED_DIR)
    (evaluate / "metrics" / METRICS_FILE).write_text('{"split": "test"}')
    with pytest.raises(ArtifactError, match="lacks the key `num_samples`"):
        collect_outputs(tmp_path / "run")
