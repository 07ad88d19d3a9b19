"""Evaluation gate: thresholds, comparison with the serving model, and the KFP component."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_model.artifact_files import EvaluationMetrics
from fer_model.errors import ArtifactError, ConfigError
from fer_model.release.gate import GateDecision, decide, load_metrics, parse_metric_key
from fer_model.tasks import get_task

SHA = "a" * 64


def _task(name: str, value: float, n_labelled: int, n: int) -> dict:
    classes = list(get_task(name).classes)
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    return {"accuracy": value, "macro_f1": value - 0.1, "n_labelled": n_labelled, "n_unlabelled": n - n_labelled,
            "classes": classes, "confusion_matrix": [[0] * len(classes) for _ in classes],
            "per_class": {c: zero for c in classes}}


def _metrics_dict(*, emotion: float, age: float = 0.4, split: str = "test", n: int = 100, sha: str | None = SHA,
                  evaluated_sha: str | None = None, split_sha: str | None = None) -> dict:
    """A metrics.json as fer_model.evaluation writes it (the numbers the gate does not read are zero).

    Without `split_sha` it is a file from before `evaluated_split_sha256`, which lacks the key.
    """
    model = {"path": "m", "dataset_manifest_sha256": sha, "evaluated_dataset_manifest_sha256": evaluated_sha,
             "dataset_matches": None, "loss_weights": {"emotion": 2.0}}
    if split_sha is not None:
        model["evaluated_split_sha256"] = split_sha
    return {
        "split": split,
        "num_samples": n,
        "tasks": {"emotion": _task("emotion", emotion, n, n), "age": _task("age", age, n // 2, n)},
        "fairness": {},
        "fairness_by_predicted_group": {},
        "model": model,
    }


def _metrics(**kwargs) -> EvaluationMetrics:
    return EvaluationMetrics.from_dict(_metrics_dict(**kwargs))


@pytest.mark.parametrize(
    ("emotion", "expected"),
    [(0.62, True), (0.50, True), (0.49, False)],
)
def test_threshold_decides_when_nothing_serves(emotion: float, expected: bool) -> None:
    result = decide(candidate=_metrics(emotion=emotion), thresholds={"emotion_accuracy": 0.5})
    assert result.deploy is expected
    assert result.numbers["candidate"] == {"emotion_accuracy": emotion}
    assert result.numbers["serving"] is None
    assert any("no model is serving" in r for r in result.reasons)


def test_every_threshold_must_pass() -> None:
    result = decide(
        candidate=_metrics(emotion=0.7, age=0.3), thresholds={"emotion_accuracy": 0.5, "age_accuracy": 0.35}
    )
    assert not result.deploy
    failed = [r for r in result.reasons if r.startswith("FAIL")]
    assert failed == ["FAIL age_accuracy: candidate 0.3000 < threshold 0.3500"]


def test_missing_metric_fails_instead_of_passing() -> None:
    candidate = _metrics_dict(emotion=0.7)
    del candidate["tasks"]["age"]
    result = decide(candidate=EvaluationMetrics.from_dict(candidate), thresholds={"age_macro_f1": 0.1})
    assert not result.deploy
    assert "no value" in result.reasons[0]


@pytest.mark.parametrize(
    ("candidate", "serving", "expected"),
    [(0.60, 0.58, True), (0.60, 0.60, True), (0.60, 0.61, False)],
)
def test_not_worse_than_serving_on_same_split(candidate: float, serving: float, expected: bool) -> None:
    result = decide(
        candidate=_metrics(emotion=candidate),
        thresholds={"emotion_accuracy": 0.5},
        serving=_metrics(emotion=serving),
    )
    assert result.deploy is expected
    assert result.numbers["comparable"] is True
    assert result.numbers["serving"] == {"emotion_accuracy": serving}
    if not expected:
        assert any("worse than serving" in r and r.startswith("FAIL") for r in result.reasons)


def test_tolerance_allows_a_small_regression() -> None:
    kwargs = {"candidate": _metrics(emotion=0.60), "thresholds": {"emotion_accuracy": 0.5}}
    assert not decide(**kwargs, serving=_metrics(emotion=0.605)).deploy
    assert decide(**kwargs, serving=_metrics(emotion=0.605), tolerance=0.01).deploy


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"sha": "b" * 64}, "dataset_manifest_sha256"),
        ({"split": "validation"}, "split"),
        ({"n": 90}, "num_samples"),
    ],
)
def test_other_data_is_not_compared(change: dict, named: str) -> None:
    # The serving model scored higher, but on other data: the comparison would be meaningless.
    serving = _metrics(emotion=0.9, **change)
    candidate = _metrics(emotion=0.6)
    lenient = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving)
    assert lenient.deploy
    assert lenient.numbers["comparable"] is False
    assert any("other data" in r and named in r and "not compared" in r for r in lenient.reasons)
    strict = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving, on_mismatch="block")
    assert not strict.deploy


def test_evaluation_dataset_hash_wins_over_training_hash() -> None:
    # Two models trained on different datasets but both evaluated on the same evaluation dataset are comparable.
    serving = _metrics(emotion=0.65, sha="b" * 64, evaluated_sha="c" * 64)
    candidate = _metrics(emotion=0.6, evaluated_sha="c" * 64)
    result = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving)
    assert result.numbers["comparable"] is True
    assert not result.deploy


def test_same_test_faces_are_compared_whatever_the_manifests_say() -> None:
    # A re-prepared or taught dataset: other manifest hashes, the same scored faces and labels.
    serving = _metrics(emotion=0.65, sha="b" * 64, evaluated_sha="c" * 64, split_sha="d" * 64)
    candidate = _metrics(emotion=0.6, sha="e" * 64, evaluated_sha="f" * 64, split_sha="d" * 64)
    result = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving)
    assert result.numbers["comparable"] is True
    assert not result.deploy
    assert "FAIL emotion_accuracy: candidate 0.6000 is worse than serving 0.6500" in result.reasons


def test_other_test_faces_are_not_compared_even_under_one_manifest() -> None:
    serving = _metrics(emotion=0.9, evaluated_sha="c" * 64, split_sha="d" * 64)
    candidate = _metrics(emotion=0.6, evaluated_sha="c" * 64, split_sha="0" * 64)
    result = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving, on_mismatch="block")
    assert result.numbers["comparable"] is False
    assert any("evaluated_split_sha256" in r and "not compared" in r for r in result.reasons)
    assert not result.deploy


@pytest.mark.parametrize(("serving_manifest", "comparable"), [("c" * 64, True), ("b" * 64, False)])
def test_a_file_without_the_split_hash_falls_back_to_the_manifest(serving_manifest: str, comparable: bool) -> None:
    serving = _metrics(emotion=0.65, evaluated_sha=serving_manifest)  # written before the split hash existed
    candidate = _metrics(emotion=0.6, evaluated_sha="c" * 64, split_sha="d" * 64)
    assert serving.model.evaluated_split_sha256 is None
    result = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving)
    assert result.numbers["comparable"] is comparable
    assert result.deploy is not comparable


def test_unknown_dataset_identity_is_not_compared() -> None:
    serving, candidate = _metrics(emotion=0.7, sha=None), _metrics(emotion=0.6, sha=None)
    result = decide(candidate=candidate, thresholds={"emotion_accuracy": 0.5}, serving=serving)
    assert result.numbers["comparable"] is False


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"thresholds": {}}, "thresholds` is empty"),
        ({"thresholds": {"emotion_recall": 0.5}}, "unknown gate metric 'emotion_recall'"),
        ({"thresholds": {"mood_accuracy": 0.5}}, "unknown gate metric 'mood_accuracy'"),
        ({"thresholds": {"emotion_accuracy": 1.5}}, "must be a number in \\[0, 1\\]"),
        ({"thresholds": {"emotion_accuracy": 0.5}, "tolerance": -0.1}, "tolerance"),
        ({"thresholds": {"emotion_accuracy": 0.5}, "on_mismatch": "ignore"}, "on_mismatch"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        decide(candidate=_metrics(emotion=0.6), **kwargs)


def test_parse_metric_key_handles_underscored_metrics() -> None:
    assert parse_metric_key("age_macro_f1") == ("age", "macro_f1")
    assert parse_metric_key("emotion_accuracy") == ("emotion", "accuracy")


def test_decision_is_frozen_and_serialisable() -> None:
    result = decide(candidate=_metrics(emotion=0.6), thresholds={"emotion_accuracy": 0.5})
    with pytest.raises(AttributeError):
        result.deploy = False  # type: ignore[misc]
    assert json.loads(json.dumps(result.to_dict()))["deploy"] is True
    with pytest.raises(ConfigError, match="reasons"):
        GateDecision(deploy=True, reasons=())


def test_load_metrics_from_file_and_folder(tmp_path: Path) -> None:
    data = _metrics_dict(emotion=0.6)
    (tmp_path / "metrics.json").write_text(json.dumps(data))
    assert load_metrics(tmp_path).to_dict() == data
    assert load_metrics(tmp_path / "metrics.json") == _metrics(emotion=0.6)
    with pytest.raises(ArtifactError, match="no metrics.json"):
        load_metrics(tmp_path / "missing")
    (tmp_path / "bad.json").write_text("[1, 2")
    with pytest.raises(ArtifactError, match="cannot be parsed as JSON"):
        load_metrics(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="must be a JSON object"):
        load_metrics(tmp_path / "list.json")


def test_candidate_must_be_read_metrics_not_a_dict() -> None:
    with pytest.raises(ConfigError, match="load_metrics"):
        decide(candidate=_metrics_dict(emotion=0.6), thresholds={"emotion_accuracy": 0.5})  # type: ignore[arg-type]


# --- the KFP component, called through .python_func with artifacts in tmp_path ---


def _artifacts(tmp_path: Path, candidate: dict):
    from kfp.dsl import Artifact, Metrics

    metrics_dir = tmp_path / "candidate"
    metrics_dir.mkdir()
    (metrics_dir / "metrics.json").write_text(json.dumps(candidate))
    metrics = Metrics(uri=str(metrics_dir))
    metrics.path = str(metrics_dir)
    decision = Artifact(uri=str(tmp_path / "decision"))
    decision.path = str(tmp_path / "decision")
    return metrics, decision


@pytest.mark.parametrize(
    ("serving_emotion", "expected"),
    [(None, True), (0.55, True), (0.7, False)],
)
def test_gate_component(tmp_path: Path, serving_emotion: float | None, expected: bool) -> None:
    from components.gate import gate

    metrics, decision = _artifacts(tmp_path, _metrics_dict(emotion=0.6))
    serving_uri = ""
    if serving_emotion is not None:
        serving_uri = str(tmp_path / "serving.json")
        Path(serving_uri).write_text(json.dumps(_metrics_dict(emotion=serving_emotion)))
    result = gate.python_func(
        candidate_metrics=metrics, decision=decision, min_emotion_accuracy=0.5, serving_metrics_uri=serving_uri
    )
    assert result is expected
    written = json.loads(Path(decision.path).read_text())
    assert written["deploy"] is expected
    assert written["numbers"]["candidate"]["emotion_accuracy"] == 0.6
    assert decision.metadata["deploy"] is expected


def test_gate_component_fails_below_threshold(tmp_path: Path) -> None:
    from components.gate import gate

    metrics, decision = _artifacts(tmp_path, _metrics_dict(emotion=0.3))
    assert (
        gate.python_func(candidate_metrics=metrics, decision=decision, min_emotion_accuracy=0.5, serving_metrics_uri="")
        is False
    )


def test_gate_component_names_a_missing_serving_file(tmp_path: Path) -> None:
    from components.gate import gate

    metrics, decision = _artifacts(tmp_path, _metrics_dict(emotion=0.6))
    with pytest.raises(ArtifactError, match="nowhere.json"):
        gate.python_func(
            candidate_metrics=metrics,
            decision=decision,
            min_emotion_accuracy=0.5,
            serving_metrics_uri=str(tmp_path / "nowhere.json"),
        )
