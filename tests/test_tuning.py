"""fer_model.tuning: shared studies over a journal file, failures, pruning, resume, reports, CLI, components.

Most tests inject a fast trainer (no TensorFlow); `test_fit_trainer_*` and the CLI test really train
through `fer_model.training.fit` on a tiny in-test dataset.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fer_model.errors import ConfigError, DataError
from fer_model.model import ModelConfig
from fer_model.tasks import TASK_NAMES, TASKS
from fer_model.training import TrainConfig
from fer_model.tuning import (
    NoCompleteTrialError,
    SearchSpace,
    TrialResult,
    TuneConfig,
    best_params,
    load_study,
    run_study,
    run_workers,
    write_study_report,
)
from fer_model.tuning._storage import open_storage, redact, storage_kind
from fer_model.tuning.objective import epoch_value, trial_train_config
from tests._kustomize import kustomize_build
from tests.test_html_page import page_references


@dataclass(frozen=True)
class FakeTrainer:
    """A deterministic stand-in for training: value(epoch) = quality * (epoch + 1) / epochs.

    quality = the emotion weight's share of all loss weights, so the sampled weights alone decide
    how good a trial is, and a trial with a small share is clearly bad at every epoch.
    Module-level and frozen so it pickles into spawned worker processes.
    """

    seconds_per_epoch: float = 0.0

    def __call__(self, *, model_config, train_config, objective, report):
        weights = train_config.weights_for(model_config.tasks)
        quality = weights["emotion"] / sum(weights.values())
        value = math.nan
        for epoch in range(train_config.epochs):
            time.sleep(self.seconds_per_epoch)
            value = quality * (epoch + 1) / train_config.epochs
            if report(epoch, value):
                break
        return TrialResult(value=value, metrics={"quality": quality})


class FlakyTrainer(FakeTrainer):
    """Raises on the given (0-based) calls, like a trial that runs out of memory."""

    def __init__(self, fail_calls: set[int]) -> None:
        super().__init__()
        object.__setattr__(self, "_calls", itertools.count())
        object.__setattr__(self, "_fail_calls", fail_calls)

    def __call__(self, **kwargs):
        if next(self._calls) in self._fail_calls:
            raise DataError("simulated out-of-memory in this trial")
        return super().__call__(**kwargs)


def _config(tmp_path: Path, **overrides) -> TuneConfig:
    fields = {"study_name": "weights", "storage": str(tmp_path / "study.journal"), "n_trials": 4,
              "epochs": 3, "pruner": "none", "seed": 0}
    return TuneConfig(**{**fields, **overrides})


def _states(config: TuneConfig) -> list[str]:
    return [t.state.name for t in load_study(storage=config.storage, study_name=config.study_name).trials]


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_weights": {"emotion": (0.0, 1.0)}}, r"loss_weights\['emotion'\].*0 < low < high"),
        ({"loss_weights": {"emotion": (2.0, 1.0)}}, r"0 < low < high"),
        ({"loss_weights": {"valence": (0.1, 1.0)}}, r"unknown task.*valence"),
        ({"learning_rate": (1e-3,)}, r"`learning_rate` must be a \(low, high\) pair"),
        ({"batch_sizes": (32, 0)}, r"`batch_sizes` must hold ints >= 1"),
        ({"batch_sizes": (32, 32)}, r"duplicates"),
    ],
)
def test_search_space_rejects_bad_ranges(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SearchSpace(**kwargs)


def test_search_space_fills_default_ranges():
    space = SearchSpace(loss_weights={"age": (1.0, 8.0)})
    assert space.weight_range("age") == (1.0, 8.0)
    assert all(space.weight_range(t) == (0.05, 10.0) for t in TASK_NAMES if t != "age")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"study_name": "bad name!"}, r"`study_name`"),
        ({"storage": " "}, r"`storage` must be"),
        ({"n_trials": 0}, r"`n_trials` must be an int >= 1"),
        ({"epochs": 1.5}, r"`epochs` must be an int"),
        ({"objective": "loss"}, r"`objective` must be one of"),
        ({"pruner": "asha"}, r"`pruner` must be one of"),
        ({"timeout": -1}, r"`timeout`"),
        ({"heartbeat_interval": 60, "grace_period": 30}, r"`grace_period`.*must exceed"),
    ],
)
def test_tune_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TuneConfig(**{"study_name": "s", "storage": "x.journal", **kwargs})


def test_storage_kinds_and_redaction(tmp_path):
    assert storage_kind(str(tmp_path / "a.journal")) == "journal"
    assert storage_kind("postgresql://u:p@h:5432/db") == "postgresql"
    assert redact("postgresql://optuna:s3cr3t@db:5432/optuna") == "postgresql://optuna:***@db:5432/optuna"
    with pytest.raises(ConfigError, match=r"'mysql' is not supported"):
        storage_kind("mysql://u:p@h/db")
    with pytest.raises(ConfigError, match=r"write postgresql://"):
        storage_kind("postgres://u:p@h/db")
    with pytest.raises(ConfigError, match=r"is a folder"):
        open_storage(str(tmp_path))


def test_trial_train_config_overrides_weights_epochs_and_lr():
    base = TrainConfig(epochs=100, learning_rate=3e-4, verbose=2)
    params = {"loss_weight_emotion": 3.0, "loss_weight_age": 0.5, "learning_rate": 1e-3, "batch_size": 64}
    config = trial_train_config(base, params, epochs=2)
    assert config.loss_weights == {"emotion": 3.0, "gender": 0.1, "race": 1.5, "age": 0.5}
    assert (config.epochs, config.learning_rate, config.batch_size, config.verbose) == (2, 1e-3, 64, 0)


# --- objective values ---------------------------------------------------------------------


def test_weighted_mean_pools_accuracy_over_labelled_pairs():
    labels = {"emotion": np.array([0, 1, 2, 3]), "gender": np.array([0, -1, -1, -1]),
              "race": np.array([-1, -1, -1, -1]), "age": np.array([1, 2, -1, -1])}
    logs = {"val_emotion_accuracy": 0.5, "val_gender_accuracy": 1.0, "val_race_accuracy": 0.0,
            "val_age_accuracy": 0.25}
    # 4 emotion labels at 0.5, 1 gender at 1.0, 2 age at 0.25; race has no labels and must not count.
    expected = (4 * 0.5 + 1 * 1.0 + 2 * 0.25) / 7
    assert epoch_value("weighted_mean", logs=logs, val_labels=labels) == pytest.approx(expected)
    assert epoch_value("emotion_accuracy", logs=logs, val_labels=labels) == 0.5


def test_macro_f1_comes_from_predictions():
    labels = {"emotion": np.array([0, 0, 1, 1, -1])}
    # Class 0: P=1/1, R=1/2 -> F1 2/3. Class 1: P=2/3, R=2/2 -> F1 0.8. Unlabelled sample ignored.
    predictions = np.array([0, 1, 1, 1, 5])
    value = epoch_value("emotion_macro_f1", logs={}, val_labels=labels, predict_emotion=lambda: predictions)
    assert value == pytest.approx((2 / 3 + 0.8) / 2)


def test_missing_log_key_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"lack 'val_emotion_accuracy'"):
        epoch_value("emotion_accuracy", logs={"val_loss": 1.0}, val_labels={})


# --- studies with an injected trainer -------------------------------------------------------


def test_parallel_workers_share_one_journal_and_stop_at_exactly_n(tmp_path):
    # 7 trials over 2 workers: an odd target makes an overshoot likely if claiming were not atomic.
    config = _config(tmp_path, n_trials=7, epochs=3)
    summaries = run_workers(workers=2, dataset_dir=None, tune_config=config,
                            trainer=FakeTrainer(seconds_per_epoch=0.15))
    study = load_study(storage=config.storage, study_name=config.study_name)
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == list(range(7))  # exactly 7, no duplicate numbers
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    assert sum(s.trials_run for s in summaries) == 7
    assert {t.user_attrs["worker"] for t in study.trials} == {0, 1}  # both really worked
    # Seeds differ per worker, so no two trials drew the same point.
    points = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(points) == 7


def test_failing_trial_is_recorded_and_the_study_goes_on(tmp_path):
    config = _config(tmp_path, n_trials=4)
    summary = run_study(dataset_dir=None, tune_config=config, trainer=FlakyTrainer({1}))
    assert _states(config) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    failed = load_study(storage=config.storage, study_name=config.study_name).trials[1]
    assert failed.user_attrs["fail_reason"] == "DataError: simulated out-of-memory in this trial"
    assert summary.states == {"COMPLETE": 3, "FAIL": 1}
    assert summary.best_trial in (0, 2, 3)


def test_median_pruner_stops_clearly_bad_trials(tmp_path):
    config = _config(tmp_path, n_trials=12, epochs=4, pruner="median", pruner_startup_trials=2,
                     pruner_warmup_epochs=0)
    summary = run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    study = load_study(storage=config.storage, study_name=config.study_name)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert pruned, "a seeded run with widely spread weights must prune something"
    best_quality = max(t.user_attrs["metrics"]["quality"] for t in complete)
    for t in pruned:
        weights = {k.removeprefix("loss_weight_"): v for k, v in t.params.items()}
        assert weights["emotion"] / sum(weights.values()) < best_quality  # pruned trials were worse
        assert t.user_attrs["epochs_trained"] < config.epochs  # and stopped early
    assert summary.epochs_trained < config.n_trials * config.epochs


def test_rerun_resumes_the_same_study(tmp_path):
    first = run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=3), trainer=FakeTrainer())
    before = load_study(storage=str(tmp_path / "study.journal"), study_name="weights").trials
    again = run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=3), trainer=FakeTrainer())
    more = run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=5), trainer=FakeTrainer())
    after = load_study(storage=str(tmp_path / "study.journal"), study_name="weights").trials
    assert (first.trials_run, again.trials_run, more.trials_run) == (3, 0, 2)
    assert [t.number for t in after] == [0, 1, 2, 3, 4]
    assert [t.params for t in after[:3]] == [t.params for t in before]  # the first three kept
    assert more.n_trials == 5


def test_a_queued_waiting_trial_is_run_even_when_the_study_is_full(tmp_path):
    import optuna

    config = _config(tmp_path, n_trials=1)
    study = optuna.create_study(study_name="weights", storage=open_storage(config.storage), direction="maximize")
    # A point queued by hand (or re-queued by PostgreSQL's heartbeat check): the study already holds
    # n_trials = 1 trial, yet it must not end with that trial left WAITING.
    queued = {f"loss_weight_{task}": 1.0 for task in TASK_NAMES}
    study.enqueue_trial(queued)
    summary = run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    assert summary.trials_run == 1 and summary.n_trials == 1
    (trial,) = load_study(storage=config.storage, study_name="weights").trials
    assert trial.state.name == "COMPLETE" and trial.params == queued


class _SignallingTrainer(FakeTrainer):
    """A FakeTrainer that sets an event when a trial starts training."""

    def __init__(self, started: threading.Event) -> None:
        super().__init__()
        object.__setattr__(self, "_started", started)

    def __call__(self, **kwargs):
        self._started.set()
        return super().__call__(**kwargs)


def test_a_rival_claim_between_count_and_create_cannot_strand_a_trial(tmp_path, monkeypatch):
    # Replays, deterministically, the interleaving that once failed at random (issue 15): right after
    # this worker's Optuna lists the WAITING trials (inside `ask`), a rival worker claims and starts
    # a trial. With the old reserve-then-pop claiming the rival took this worker's reservation, this
    # worker created a third trial outside the lock and the rival's reservation stayed WAITING. Now
    # the rival must wait for the claim lock, and the study ends with exactly n trials, all run.
    from optuna.storages.journal import JournalStorage
    from optuna.trial import TrialState

    config = _config(tmp_path, n_trials=2)
    rival_started = threading.Event()
    rival: list = []
    list_trials = JournalStorage.get_all_trials

    def get_all_trials(self, study_id, deepcopy=True, states=None):
        trials = list_trials(self, study_id, deepcopy=deepcopy, states=states)
        if states == (TrialState.WAITING,) and threading.current_thread() is threading.main_thread() and not rival:
            thread = threading.Thread(target=lambda: rival.append(run_study(
                dataset_dir=None, tune_config=config, trainer=_SignallingTrainer(rival_started), n_trials=1)))
            rival.append(thread)
            thread.start()
            # Long enough for an unlocked rival to claim and start training; a locked-out one never does.
            rival_started.wait(timeout=3)
        return trials

    monkeypatch.setattr(JournalStorage, "get_all_trials", get_all_trials)
    mine = run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer(), n_trials=1)
    rival[0].join(timeout=60)
    assert [t.state.name for t in load_study(storage=config.storage, study_name="weights").trials] == [
        "COMPLETE", "COMPLETE"]
    assert mine.trials_run == 1 and rival[1].trials_run == 1


def test_resuming_a_study_never_redraws_earlier_points(tmp_path):
    # Issue 15: `--trials 3 --workers 2` then `--trials 4 --workers 1` gave trial 3 = trial 0's weights,
    # because the resumed worker 0 was seeded like the first run's worker 0.
    run_workers(workers=2, dataset_dir=None, tune_config=_config(tmp_path, n_trials=3), trainer=FakeTrainer())
    run_workers(workers=1, dataset_dir=None, tune_config=_config(tmp_path, n_trials=4), trainer=FakeTrainer())
    run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=6), trainer=FakeTrainer(), worker_index=1)
    points = [tuple(sorted(t.params.items())) for t in load_study(storage=str(tmp_path / "study.journal"),
                                                                   study_name="weights").trials]
    assert len(points) == 6 and len(set(points)) == 6


def test_a_one_worker_study_is_reproducible_from_its_seed(tmp_path):
    def points(folder: Path, seed: int) -> list:
        run_study(dataset_dir=None, tune_config=_config(folder, n_trials=3, seed=seed), trainer=FakeTrainer())
        return [t.params for t in load_study(storage=str(folder / "study.journal"), study_name="weights").trials]

    first = points(tmp_path / "a", seed=0)
    assert points(tmp_path / "b", seed=0) == first
    assert points(tmp_path / "c", seed=1) != first


def test_per_call_cap_limits_this_worker_only(tmp_path):
    summary = run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=5), trainer=FakeTrainer(),
                        n_trials=2)
    assert (summary.trials_run, summary.n_trials) == (2, 2)


def test_resuming_with_another_objective_is_refused(tmp_path):
    run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=1), trainer=FakeTrainer())
    with pytest.raises(ConfigError, match=r"started with objective='emotion_accuracy'.*--objective"):
        run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=2, objective="weighted_mean"),
                  trainer=FakeTrainer())


def test_a_new_study_names_its_metric_after_the_objective(tmp_path):
    config = _config(tmp_path, n_trials=1, objective="weighted_mean")
    run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    assert load_study(storage=config.storage, study_name="weights").metric_names == ["weighted_mean"]


def test_progress_lines_name_trial_state_value_and_best(tmp_path):
    lines: list[str] = []
    run_study(dataset_dir=None, tune_config=_config(tmp_path, n_trials=2), trainer=FlakyTrainer({1}),
              on_trial=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("trial   0 COMPLETE value=") and "emotion=" in lines[0]
    assert "best=" in lines[0] and "(trial 0)" in lines[0]
    assert lines[1].startswith("trial   1 FAIL") and "error=DataError" in lines[1]


def test_bad_dataset_fails_once_before_any_trial(tmp_path):
    from fer_model.errors import ArtifactError

    with pytest.raises(ArtifactError, match=r"manifest.json is missing"):
        run_study(dataset_dir=tmp_path / "nope", tune_config=_config(tmp_path))
    assert not (tmp_path / "study.journal").exists()


# --- reading results ----------------------------------------------------------------------


def test_best_params_and_report_files(tmp_path):
    config = _config(tmp_path, n_trials=5)
    run_study(dataset_dir=None, tune_config=config, trainer=FlakyTrainer({2}))
    study = load_study(storage=config.storage, study_name=config.study_name)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    best_trial = max(complete, key=lambda t: t.value)

    best = best_params(storage=config.storage, study_name="weights")
    assert set(best) == {"loss_weights"}
    assert best["loss_weights"] == {t: best_trial.params[f"loss_weight_{t}"] for t in TASK_NAMES}

    out = write_study_report(storage=config.storage, study_name="weights", out_dir=tmp_path / "report")
    report = json.loads((out / "best_params.json").read_text())
    assert report["best"]["trial"] == best_trial.number
    assert report["best"]["value"] == pytest.approx(best_trial.value)
    assert report["best"]["loss_weights"] == best["loss_weights"]
    assert sum(report["states"].values()) == report["n_trials"] == 5
    with open(out / "trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == [t.state.name for t in study.trials]
    assert rows[2]["fail_reason"].startswith("DataError")
    assert float(rows[best_trial.number]["value"]) == pytest.approx(best_trial.value)
    page = (out / "plots.html").read_text()
    # plotly.js is inlined (no <script src=...>), so the page renders without internet access.
    refs = page_references(page)
    assert refs.images == [] and refs.other == [] and len(page) > 1_000_000
    assert study.metric_names == [config.objective] == ["emotion_accuracy"]
    assert page.count("Plotly.newPlot") >= 4 and "<h2>Parameter importances</h2>" in page


def test_report_with_one_complete_trial_skips_importances(tmp_path):
    config = _config(tmp_path, n_trials=1)
    run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    out = write_study_report(storage=config.storage, study_name="weights", out_dir=tmp_path / "r")
    assert "Skipped: needs at least 2 completed trials, the study has 1." in (out / "plots.html").read_text()


def test_no_complete_trial_means_no_best(tmp_path):
    config = _config(tmp_path, n_trials=2)
    run_study(dataset_dir=None, tune_config=config, trainer=FlakyTrainer({0, 1}))
    with pytest.raises(NoCompleteTrialError, match=r"no completed trial"):
        best_params(storage=config.storage, study_name="weights")
    out = write_study_report(storage=config.storage, study_name="weights", out_dir=tmp_path / "r")
    assert json.loads((out / "best_params.json").read_text())["best"] is None


def test_unknown_study_and_missing_journal_are_clear_errors(tmp_path):
    config = _config(tmp_path, n_trials=1)
    run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    with pytest.raises(ConfigError, match=r"has no study 'other'; it has \['weights'\]"):
        best_params(storage=config.storage, study_name="other")
    with pytest.raises(ConfigError, match=r"does not exist"):
        best_params(storage=str(tmp_path / "missing.journal"), study_name="weights")


# --- components ---------------------------------------------------------------------------


def _artifact(kind, path: Path):
    artifact = kind(uri=str(path))
    artifact.path = str(path)  # `.path` follows the URI under KFP; set it directly outside a pipeline
    return artifact


def test_select_best_returns_study_weights(tmp_path):
    from kfp.dsl import HTML, Artifact

    from components.select_best import select_best

    config = _config(tmp_path, n_trials=3)
    run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    report, best = _artifact(HTML, tmp_path / "report.html"), _artifact(Artifact, tmp_path / "best")
    weights = json.loads(select_best.python_func(
        study_report=report, best=best, storage_url=config.storage, study_name="weights", train_config=""))
    assert weights == best_params(storage=config.storage, study_name="weights")["loss_weights"]
    assert best.metadata["source"] == "study" and best.metadata["n_trials"] == 3
    assert (tmp_path / "best" / "trials.csv").is_file() and "Plotly" in (tmp_path / "report.html").read_text()


def test_select_best_falls_back_to_defaults_and_says_so(tmp_path):
    from kfp.dsl import HTML, Artifact

    from components.select_best import select_best

    config = _config(tmp_path, n_trials=1)
    run_study(dataset_dir=None, tune_config=config, trainer=FlakyTrainer({0}))
    best = _artifact(Artifact, tmp_path / "best")
    out = select_best.python_func(study_report=_artifact(HTML, tmp_path / "r.html"), best=best,
                                  storage_url=config.storage, study_name="weights",
                                  train_config='{"loss_weights": {"emotion": 2.0, "age": 4.0}}')
    # The run's own loss weights: what train would have used without a tuning step.
    assert json.loads(out) == {"emotion": 2.0, "age": 4.0}
    assert best.metadata["source"] == "default" and "no trial completed" in best.metadata["note"]


def test_select_best_rejects_malformed_defaults(tmp_path):
    from kfp.dsl import HTML, Artifact

    from components.select_best import select_best

    with pytest.raises(ConfigError, match=r"`TrainConfig` must be a JSON object"):
        select_best.python_func(study_report=_artifact(HTML, tmp_path / "r.html"),
                                best=_artifact(Artifact, tmp_path / "b"), storage_url=str(tmp_path / "j"),
                                study_name="weights", train_config="emotion=2")


def test_components_compile_with_their_interfaces(tmp_path):
    import yaml
    from kfp import compiler

    from components.select_best import select_best
    from components.tune_worker import tune_worker

    for component, inputs, outputs in (
        (tune_worker, {"storage_url", "study_name", "worker_index", "tune_config", "model_config", "train_config"},
         {"Output"}),
        (select_best, {"storage_url", "study_name", "train_config"}, {"Output", "study_report", "best"}),
    ):
        path = tmp_path / f"{component.name}.yaml"
        compiler.Compiler().compile(component, str(path))
        spec = yaml.safe_load(path.read_text())
        (comp,) = spec["components"].values()
        assert set(comp["inputDefinitions"]["parameters"]) == inputs
        declared = set(comp["outputDefinitions"].get("parameters", {})) | set(
            comp["outputDefinitions"].get("artifacts", {}))
        assert declared == outputs


# --- real training through fit --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """48 random 50x50 faces with every task labelled: 32 train, 16 validation."""
    from fer_model.dataset import write_dataset

    rng = np.random.default_rng(0)
    n = 48
    labels = {t.name: rng.integers(0, t.num_classes, n) for t in TASKS}
    split = np.array([0] * 32 + [1] * 16)
    return write_dataset(tmp_path_factory.mktemp("tune") / "dataset",
                         images=rng.integers(0, 256, (n, 50, 50), dtype=np.uint8), labels=labels, split=split)


@pytest.mark.slow
def test_fit_trainer_trains_and_returns_validation_accuracy(tmp_path, tiny_dataset):
    config = _config(tmp_path, n_trials=2, epochs=2, objective="emotion_accuracy")
    summary = run_study(dataset_dir=tiny_dataset, tune_config=config, model_config=ModelConfig(width=0.125),
                        train_config=TrainConfig(batch_size=16))
    study = load_study(storage=config.storage, study_name="weights")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        # The objective is exactly Keras's masked validation accuracy at fit's best epoch.
        assert t.value == pytest.approx(t.user_attrs["metrics"]["val_emotion_accuracy"])
        assert t.user_attrs["epochs_trained"] == 2 and 0 <= t.value <= 1
    assert summary.epochs_trained == 4


@pytest.mark.slow
def test_cli_tune_with_macro_f1_writes_report(tmp_path, tiny_dataset, capsys):
    from fer_cli import main

    storage = tmp_path / "cli.journal"
    code = main(["tune", "--dataset", str(tiny_dataset), "--storage", str(storage), "--study", "cli",
                 "--trials", "2", "--epochs", "1", "--width", "0.125", "--batch-size", "16",
                 "--objective", "emotion_macro_f1", "--pruner", "none", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    assert code == 0
    assert printed.count("COMPLETE value=") == 2 and "best emotion_macro_f1=" in printed
    report = json.loads((tmp_path / "out" / "best_params.json").read_text())
    assert report["objective"] == "emotion_macro_f1" and report["states"] == {"COMPLETE": 2}
    assert 0.0 <= report["best"]["value"] <= 1.0


@pytest.mark.slow
def test_tune_worker_component_runs_trials_on_the_dataset(tmp_path, tiny_dataset, monkeypatch):
    from kfp.dsl import Dataset

    from components.tune_worker import tune_worker

    # The storage URL's environment variables are expanded inside the component.
    monkeypatch.setenv("FER_TUNE_DIR", str(tmp_path))
    ran = tune_worker.python_func(dataset=_artifact(Dataset, tiny_dataset), storage_url="${FER_TUNE_DIR}/k.journal",
                                  study_name="kfp", worker_index=1,
                                  tune_config='{"n_trials": 1, "epochs": 1, "pruner": "none"}',
                                  model_config='{"width": 0.125}')
    assert ran == 1
    (trial,) = load_study(storage=str(tmp_path / "k.journal"), study_name="kfp").trials
    assert trial.state.name == "COMPLETE" and trial.user_attrs["worker"] == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    from fer_cli import main

    code = main(["tune", "--dataset", str(tmp_path), "--storage", "mysql://x/y", "--study", "s"])
    assert code == 2
    assert "mysql" in capsys.readouterr().err


# --- the PostgreSQL manifest ----------------------------------------------------------------

_MANIFEST = Path(__file__).resolve().parents[1] / "manifests" / "base" / "tuning-postgres.yaml"


def test_postgres_manifest_is_valid_and_holds_no_password():
    import base64

    import kubernetes_validate
    import yaml

    docs = [d for d in yaml.safe_load_all(_MANIFEST.read_text()) if d]
    assert [d["kind"] for d in docs] == ["Secret", "Service", "StatefulSet"]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    secret, service, statefulset = docs
    assert secret["data"]["password"] == ""  # a template: the overlay generates the real one
    assert base64.b64decode(secret["data"]["username"]) == b"optuna"
    pod = statefulset["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "fer-mtl-tuning-postgres",
                                                                     "key": "password"}
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"] == secret["metadata"]["name"]
    assert service["spec"]["selector"] == statefulset["spec"]["template"]["metadata"]["labels"]


def test_documented_secret_generator_fills_the_password(tmp_path):
    import base64
    import shutil


    (tmp_path / "base").mkdir()
    shutil.copy(_MANIFEST, tmp_path / "base" / "tuning-postgres.yaml")
    (tmp_path / "base" / "kustomization.yaml").write_text("resources: [tuning-postgres.yaml]\n")
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "tuning-postgres.password").write_text("0123abcd")
    # The overlay exactly as the manifest's header comment and docs/tuning.md tell users to write it.
    (tmp_path / "env" / "kustomization.yaml").write_text(
        "resources: [../base]\nsecretGenerator:\n  - name: fer-mtl-tuning-postgres\n    behavior: merge\n"
        "    files: [password=tuning-postgres.password]\n    options: {disableNameSuffixHash: true}\n")
    (secret,) = [d for d in kustomize_build(tmp_path / "env") if d["kind"] == "Secret"]
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "username": "optuna", "database": "optuna", "password": "0123abcd"}


def test_orphaned_worker_claims_no_more_trials(tmp_path):
    # A worker whose parent (the `fer-mtl tune` process) was killed must not run the study on alone.
    config = _config(tmp_path, n_trials=4)
    orphan = run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer(), parent_pid=os.getppid() + 1)
    assert orphan.trials_run == 0
    adopted = run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer(), parent_pid=os.getppid())
    assert adopted.trials_run == 4


# --- faults: killed workers, shared storage -------------------------------------------------


def _wait_for(predicate, *, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def _spawn_python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_worker_killed_mid_trial_leaves_a_failed_trial_and_the_study_completes(tmp_path):
    config = _config(tmp_path, n_trials=3)
    worker = _spawn_python(
        "from pathlib import Path\n"
        "from tests.test_tuning import FakeTrainer, _config\n"
        "from fer_model.tuning import run_study\n"
        f"run_study(dataset_dir=None, tune_config=_config(Path({str(tmp_path)!r}), n_trials=3), "
        "trainer=FakeTrainer(seconds_per_epoch=600))\n"
    )


    def first_trial_started() -> bool:
        try:
            trials = load_study(storage=config.storage, study_name="weights").trials
        except ConfigError:  # the worker has not created the study yet
            return False
        return bool(trials) and trials[0].state.name == "RUNNING" and "owner" in trials[0].user_attrs

    try:
        _wait_for(first_trial_started, what="the worker's first trial to start")
    finally:
        worker.kill()
        worker.wait()
    summary = run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())
    trials = load_study(storage=config.storage, study_name="weights").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["fail_reason"].startswith(f"WorkerDied: process {worker.pid} ")
    assert (summary.trials_run, summary.n_trials) == (2, 3)


def test_a_worker_killed_while_claiming_does_not_block_the_others(tmp_path):
    config = _config(tmp_path, n_trials=2)
    holder = _spawn_python(
        "import time\n"
        "from fer_model.tuning._storage import ClaimLock\n"
        f"with ClaimLock({config.storage!r}, 'weights').hold():\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()
    done: list = []
    thread = threading.Thread(target=lambda: done.append(
        run_study(dataset_dir=None, tune_config=config, trainer=FakeTrainer())), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert done and done[0].trials_run == 2  # not stuck behind the dead holder's lock


def test_two_studies_in_one_journal_never_mix(tmp_path):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    studies = {"a": 5, "b": 3}
    jobs = [("a", 0), ("a", 1), ("b", 0)]
    with ProcessPoolExecutor(max_workers=3, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_study, dataset_dir=None, worker_index=worker,
                               tune_config=_config(tmp_path, study_name=name, n_trials=studies[name]),
                               trainer=FakeTrainer(seconds_per_epoch=0.05)) for name, worker in jobs]
        summaries = [f.result() for f in futures]
    for name, n in studies.items():
        trials = load_study(storage=str(tmp_path / "study.journal"), study_name=name).trials
        assert [t.number for t in trials] == list(range(n)) and {t.state.name for t in trials} == {"COMPLETE"}
        assert sum(s.trials_run for s, (job, _) in zip(summaries, jobs, strict=True) if job == name) == n
    assert {s.study_name for s in summaries} == {"a", "b"}
    assert all(s.n_trials == studies[s.study_name] for s in summaries)


def test_a_trial_of_another_pid_namespace_is_never_judged_dead(tmp_path):
    # Containers on the host's network share its host name but not its PIDs (kfp.local's DockerRunner):
    # a PID from another namespace says nothing about a process here, so its trial must stay RUNNING.
    from fer_model.tuning import study as study_module

    config = _config(tmp_path, n_trials=3)
    study = study_module._open(config)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    other, ours = study.ask(), study.ask()
    owner = {"host": socket.gethostname(), "pid": dead.pid}
    other.set_user_attr(study_module.OWNER, {**owner, "pid_ns": "pid:[1]"})
    ours.set_user_attr(study_module.OWNER, {**owner, "pid_ns": study_module._pid_namespace()})
    study_module._fail_trials_of_dead_workers(study, study.get_trials(deepcopy=False))
    states = {t.number: t.state.name for t in study.get_trials()}
    assert states == {other.number: "RUNNING", ours.number: "FAIL"}
