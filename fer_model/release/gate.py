"""Evaluation gate: should a candidate model replace the one serving?

Two rules, both must hold:
1. Thresholds: every `<task>_<metric>` threshold (e.g. `emotion_accuracy: 0.5`) is met by the
   candidate's `metrics.json`. A metric the candidate lacks fails the gate: absence is not a pass.
2. Not worse than serving: when a model is already serving, the candidate is not worse on each
   thresholded metric (within `tolerance`), *provided both were evaluated on the same data*.

"Same data" means the same split name, the same number of samples, the same labelled counts
per compared task, and the same faces and labels: the scored split's own hash
(`model.evaluated_split_sha256`) when both files record it. A rebuilt dataset, a taught copy or one
with more training faces then still counts as the same test set. Files written before that field fall
back to the dataset: the evaluation dataset's manifest sha256 when recorded
(`model.evaluated_dataset_manifest_sha256`), else the training dataset's (`model.dataset_manifest_sha256`,
whose test split is then the same rows). When they differ the numbers are not comparable (other test
faces), so the gate says so and, by default (`on_mismatch="thresholds_only"`), decides on thresholds
alone; pass `on_mismatch="block"` to refuse deployment until the serving model is re-evaluated on the
candidate's data.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from fer_model.artifact_files import EvaluationMetrics
from fer_model.errors import ConfigError
from fer_model.tasks import TASK_NAMES

logger = logging.getLogger(__name__)

#: Per-task metrics in metrics.json the gate knows how to threshold (higher is better for all).
GATE_METRICS: tuple[str, ...] = ("accuracy", "macro_f1")

OnMismatch = Literal["thresholds_only", "block"]


def parse_metric_key(key: str) -> tuple[str, str]:
    """Split a threshold key such as `emotion_accuracy` or `age_macro_f1` into (task, metric).

    Raises:
        ConfigError: the key names no known task or no known metric.
    """
    for metric in GATE_METRICS:
        suffix = "_" + metric
        if key.endswith(suffix) and key[: -len(suffix)] in TASK_NAMES:
            return key[: -len(suffix)], metric
    expected = [f"{t}_{m}" for t in TASK_NAMES for m in GATE_METRICS]
    raise ConfigError(f"unknown gate metric {key!r}; expected `<task>_<metric>`, one of {expected}")


def metric_value(metrics: EvaluationMetrics, key: str) -> float | None:
    """The value of `<task>_<metric>` in metrics.json; None when the task or its value is absent."""
    task_name, metric = parse_metric_key(key)
    task = metrics.task(task_name)
    value = None if task is None else getattr(task, metric)
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True)
class GateDecision:
    """The gate's answer.

    Attributes:
        deploy: True when the candidate may be deployed.
        reasons: One human-readable line per check, passed or failed, in the order checked.
        numbers: `{"candidate": {key: value}, "serving": {key: value} | None,
            "thresholds": {...}, "comparable": bool | None}`, for the decision artifact.
    """

    deploy: bool
    reasons: tuple[str, ...]
    numbers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.deploy, bool):
            raise ConfigError(f"`deploy` must be a bool, got {type(self.deploy).__name__}")
        if not self.reasons:
            raise ConfigError("`reasons` must hold at least one line explaining the decision")
        object.__setattr__(self, "reasons", tuple(self.reasons))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: `{"deploy": bool, "reasons": [...], "numbers": {...}}`."""
        return {"deploy": self.deploy, "reasons": list(self.reasons), "numbers": self.numbers}


def evaluation_identity(metrics: EvaluationMetrics, *, keys: list[str]) -> dict[str, Any]:
    """What identifies the data a metrics.json was computed on (see the module docstring)."""
    dataset = metrics.model.evaluated_dataset_manifest_sha256 or metrics.model.dataset_manifest_sha256
    identity: dict[str, Any] = {
        "split": metrics.split,
        "num_samples": metrics.num_samples,
        "evaluated_split_sha256": metrics.model.evaluated_split_sha256,
        "dataset_manifest_sha256": dataset,
    }
    for name in sorted({parse_metric_key(k)[0] for k in keys}):
        task = metrics.task(name)
        identity[f"{name}.n_labelled"] = None if task is None else task.n_labelled
    return identity


def _check_options(candidate: Any, thresholds: dict[str, float], tolerance: float, on_mismatch: str) -> list[str]:
    """The threshold keys, sorted, once every argument of `decide` is known to be usable."""
    if not thresholds:
        raise ConfigError("`thresholds` is empty; pass at least one, e.g. {'emotion_accuracy': 0.5}")
    if not 0.0 <= tolerance <= 1.0:
        raise ConfigError(f"`tolerance` must be in [0, 1], got {tolerance}")
    if on_mismatch not in ("thresholds_only", "block"):
        raise ConfigError(f"`on_mismatch` must be 'thresholds_only' or 'block', got {on_mismatch!r}")
    if not isinstance(candidate, EvaluationMetrics):
        raise ConfigError(f"`candidate` must be EvaluationMetrics (read it with `load_metrics`), "
                          f"got {type(candidate).__name__}")
    keys = sorted(thresholds)
    for key in keys:
        parse_metric_key(key)
        value = thresholds[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"threshold {key!r} must be a number in [0, 1], got {value!r}")
    return keys


def _check_thresholds(
    values: dict[str, float | None], thresholds: dict[str, float], reasons: list[str]
) -> bool:
    """Rule 1: append one reason per threshold; True when the candidate meets all of them."""
    passed = True
    for key, value in values.items():
        minimum = float(thresholds[key])
        if value is None:
            passed = False
            reasons.append(f"FAIL {key}: the candidate's metrics.json has no value for it")
        elif value < minimum:
            passed = False
            reasons.append(f"FAIL {key}: candidate {value:.4f} < threshold {minimum:.4f}")
        else:
            reasons.append(f"ok {key}: candidate {value:.4f} >= threshold {minimum:.4f}")
    return passed


def _data_differences(candidate: EvaluationMetrics, serving: EvaluationMetrics, keys: list[str]) -> list[str]:
    """How the two evaluations' data differ; empty when their numbers are comparable."""
    cand_id = evaluation_identity(candidate, keys=keys)
    serve_id = evaluation_identity(serving, keys=keys)
    by_split = bool(cand_id["evaluated_split_sha256"] and serve_id["evaluated_split_sha256"])
    # One of the two hashes decides: a manifest hash also moves with paths, teachers and training
    # faces, so it is asked only of files that predate the split hash.
    unused = "dataset_manifest_sha256" if by_split else "evaluated_split_sha256"
    diffs = [f"{k} {serve_id[k]!r} vs {cand_id[k]!r}" for k in cand_id if k != unused and cand_id[k] != serve_id[k]]
    if not by_split and (cand_id["dataset_manifest_sha256"] is None or serve_id["dataset_manifest_sha256"] is None):
        diffs.append("a dataset_manifest_sha256 is missing, so sameness cannot be shown")
    return diffs


def _compare_with_serving(
    cand_numbers: dict[str, float | None], serve_numbers: dict[str, float | None], tolerance: float,
    reasons: list[str],
) -> bool:
    """Rule 2 on comparable data: append one reason per metric; True when none is worse than serving."""
    passed = True
    for key, cand in cand_numbers.items():
        serv = serve_numbers[key]
        if serv is None:
            reasons.append(f"ok {key}: the serving metrics have no value for it; not compared")
        elif cand is None:
            continue  # already failed on thresholds
        elif cand < serv - tolerance:
            passed = False
            reasons.append(f"FAIL {key}: candidate {cand:.4f} is worse than serving {serv:.4f}")
        else:
            reasons.append(f"ok {key}: candidate {cand:.4f} is not worse than serving {serv:.4f}")
    return passed


def decide(
    *,
    candidate: EvaluationMetrics,
    thresholds: dict[str, float],
    serving: EvaluationMetrics | None = None,
    tolerance: float = 0.0,
    on_mismatch: OnMismatch = "thresholds_only",
) -> GateDecision:
    """Decide whether `candidate` may be deployed.

    Args:
        candidate: The candidate's metrics.json.
        thresholds: Minimum values, keyed `<task>_<metric>` (e.g. `{"emotion_accuracy": 0.5}`).
            The same keys are the ones compared against the serving model.
        serving: metrics.json of the model serving now, or None when nothing serves.
        tolerance: How much worse than serving (absolute) still counts as "not worse"; 0 by default.
        on_mismatch: What to do when `serving` was evaluated on other data: decide on thresholds
            alone (`"thresholds_only"`) or refuse (`"block"`).

    Returns:
        A GateDecision; `deploy` is True only when every check passed.

    Raises:
        ConfigError: no thresholds, an unknown key, a threshold outside [0, 1], or a bad option.
    """
    keys = _check_options(candidate, thresholds, tolerance, on_mismatch)
    reasons: list[str] = []
    cand_numbers = {k: metric_value(candidate, k) for k in keys}
    passed = _check_thresholds(cand_numbers, thresholds, reasons)
    numbers: dict[str, Any] = {
        "candidate": cand_numbers,
        "serving": None,
        "thresholds": {k: float(thresholds[k]) for k in keys},
        "tolerance": tolerance,
        "comparable": None,
    }
    if serving is None:
        reasons.append("no model is serving: nothing to compare against")
    else:
        serve_numbers = {k: metric_value(serving, k) for k in keys}
        numbers["serving"] = serve_numbers
        diffs = _data_differences(candidate, serving, keys)
        numbers["comparable"] = not diffs
        if not diffs:
            passed = _compare_with_serving(cand_numbers, serve_numbers, tolerance, reasons) and passed
        else:
            reasons.append(f"serving metrics were computed on other data (serving vs candidate: {'; '.join(diffs)}): "
                           "not compared")
            if on_mismatch == "block":
                passed = False
                reasons.append("FAIL on_mismatch='block': re-evaluate the serving model on the candidate's test split")
    decision = GateDecision(deploy=passed, reasons=tuple(reasons), numbers=numbers)
    logger.info("gate: %s (%s)", "deploy" if passed else "do not deploy", "; ".join(reasons))
    return decision


def load_metrics(path: str | os.PathLike[str]) -> EvaluationMetrics:
    """Read metrics.json from a file, a folder holding it, or a gs:// URI of either.

    Raises:
        ArtifactError: nothing there, or the file is not JSON or not the metrics.json schema.
        StorageError: a gs:// location cannot be read.
    """
    text = str(path)
    if text.startswith("gs://"):
        from fer_model.storage import local_source  # google-cloud-storage is only needed for gs://

        return EvaluationMetrics.read(local_source(text))
    return EvaluationMetrics.read(os.path.expanduser(text.removeprefix("file://")))
