"""Run a loss-weight study from one or many workers, and read its result back.

Every worker opens the same study (`load_if_exists`), samples with TPE seeded `seed + worker_index`,
and reserves each trial under a claim lock, so N workers finish with exactly `n_trials` trials.
A trial that raises is recorded as FAIL (with its reason) and the study goes on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from fer_model.errors import ConfigError, FerError
from fer_model.model import ModelConfig
from fer_model.training import TrainConfig
from fer_model.tuning._storage import ClaimLock, open_storage, redact
from fer_model.tuning.config import LOSS_WEIGHT_PARAM, SearchSpace, TuneConfig
from fer_model.tuning.objective import (
    FitTrainer,
    Trainer,
    TrialResult,
    params_to_settings,
    suggest_params,
    trial_train_config,
)

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

#: Study user attributes that must agree between the workers (and reruns) of one study.
_PINNED_ATTRS = ("objective",)


class NoCompleteTrialError(FerError):
    """The study has no COMPLETE trial, so it has no best parameters yet."""


@dataclass(frozen=True)
class StudySummary:
    """Where a study stands after a worker's `run_study`.

    Attributes:
        study_name: The study.
        storage: Its storage, password redacted.
        objective: The maximised metric.
        n_trials: Trials in the whole study, every state.
        states: Count per state name (COMPLETE, PRUNED, FAIL, RUNNING, WAITING).
        best_value: Best objective value so far (None if nothing completed).
        best_trial: Number of that trial.
        best_params: Its settings: {"loss_weights": {...}, "learning_rate"?: ..., "batch_size"?: ...}.
        trials_run: Trials this call ran.
        epochs_trained: Epochs this call trained, over all its trials (pruned ones stop early).
    """

    study_name: str
    storage: str
    objective: str
    n_trials: int
    states: Mapping[str, int] = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    best_params: Mapping[str, Any] | None = None
    trials_run: int = 0
    epochs_trained: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_sampler(tune_config: TuneConfig, *, worker_index: int) -> optuna.samplers.BaseSampler:
    """TPE seeded per worker, so parallel workers do not draw the same startup points."""
    import optuna

    return optuna.samplers.TPESampler(seed=tune_config.seed + worker_index)


def make_pruner(tune_config: TuneConfig) -> optuna.pruners.BasePruner:
    """The configured pruner; its unit of resource is one epoch."""
    import optuna

    if tune_config.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=tune_config.pruner_startup_trials, n_warmup_steps=tune_config.pruner_warmup_epochs
        )
    if tune_config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tune_config.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _open(tune_config: TuneConfig, *, worker_index: int) -> optuna.Study:
    """Create or load the study, checking that its pinned settings match this worker's."""
    import optuna

    with warnings.catch_warnings():
        # Optuna flags heartbeats as experimental; they are what makes dead pods' trials recoverable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = open_storage(
            tune_config.storage,
            heartbeat_interval=tune_config.heartbeat_interval,
            grace_period=tune_config.grace_period,
        )
    study = optuna.create_study(
        study_name=tune_config.study_name,
        storage=storage,
        sampler=make_sampler(tune_config, worker_index=worker_index),
        pruner=make_pruner(tune_config),
        direction="maximize",
        load_if_exists=True,
    )
    for name in _PINNED_ATTRS:
        ours = getattr(tune_config, name)
        theirs = study.user_attrs.get(name)
        if theirs is None:
            study.set_user_attr(name, ours)
        elif theirs != ours:
            raise ConfigError(
                f"study {tune_config.study_name!r} was started with {name}={theirs!r}, this run asks for {ours!r}; "
                f"values of different metrics cannot be compared: pass --{name} {theirs} or a new --study name"
            )
    study.set_user_attr("epochs_per_trial", tune_config.epochs)
    return study


def run_study(
    *,
    dataset_dir: str | os.PathLike[str] | None,
    tune_config: TuneConfig,
    search_space: SearchSpace | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    n_trials: int | None = None,
    worker_index: int = 0,
    trainer: Trainer | None = None,
    on_trial: Callable[[str], None] | None = None,
    parent_pid: int | None = None,
) -> StudySummary:
    """Run trials of one shared study until it holds `tune_config.n_trials` trials.

    Rerunning with the same storage and study name resumes it: finished trials stay, and only the
    missing ones are run (raise `tune_config.n_trials` to search further).

    Args:
        dataset_dir: Dataset artifact to train on (unused when `trainer` is given).
        tune_config: Study, storage, study-wide trial target, objective, pruner, seed, epochs.
        search_space: Ranges to sample (default: every task's weight in [0.05, 10], log-uniform).
        model_config: Architecture of the run being tuned for (trials use it at `tune_config.width`, if set).
        train_config: Base hyper-parameters; each trial overrides loss weights, epochs (and lr/batch
            size if searched).
        n_trials: At most this many trials from this call (None: as many as the study needs).
        worker_index: This worker's index (0..N-1); offsets the sampler seed.
        trainer: Trains one trial (default: `FitTrainer(dataset_dir)`, i.e. `fer_model.training.fit`).
        on_trial: Receives a progress line after each trial (number, state, value, params, best so far).
        parent_pid: Set by `run_workers`: once this process's parent is no longer that process (it
            was killed), claim no more trials instead of running the study on as an orphan.

    Returns:
        The study's state after this worker's last trial.
    """
    import optuna

    search_space = search_space or SearchSpace()
    model_config = tune_config.trial_model(model_config or ModelConfig())
    train_config = train_config or TrainConfig()
    if isinstance(worker_index, bool) or not isinstance(worker_index, int) or worker_index < 0:
        raise ConfigError(f"`worker_index` must be an int >= 0, got {worker_index!r}")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0):
        raise ConfigError(f"`n_trials` must be an int >= 0 or None, got {n_trials!r}")
    if trainer is None:
        if dataset_dir is None:
            raise ConfigError("`dataset_dir` is required unless a `trainer` is given")
        trainer = FitTrainer(dataset_dir)
    study = _open(tune_config, worker_index=worker_index)
    epochs_trained: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial, search_space=search_space, tasks=model_config.tasks)
        config = trial_train_config(train_config, params, epochs=tune_config.epochs)
        reporter = _Reporter(trial)
        started = time.monotonic()
        try:
            result: TrialResult = trainer(
                model_config=model_config, train_config=config, objective=tune_config.objective, report=reporter
            )
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Optuna records FAIL but not why; the reason goes into trials.csv.
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            epochs_trained.append(reporter.epochs)
            trial.set_user_attr("worker", worker_index)
            trial.set_user_attr("epochs_trained", reporter.epochs)
            trial.set_user_attr("train_seconds", round(time.monotonic() - started, 3))
        if reporter.pruned:
            raise optuna.TrialPruned(f"after epoch {reporter.epochs}: {tune_config.objective}={reporter.last:.4f}")
        trial.set_user_attr("metrics", {k: float(v) for k, v in result.metrics.items()})
        return float(result.value)

    callbacks = []
    if on_trial is not None:
        callbacks.append(lambda s, t: on_trial(format_trial_line(s, t)))
    deadline = None if tune_config.timeout is None else time.monotonic() + tune_config.timeout
    lock = ClaimLock(tune_config.storage, tune_config.study_name)
    trials_run = 0
    try:
        while n_trials is None or trials_run < n_trials:
            if deadline is not None and time.monotonic() >= deadline:
                logger.info("worker %d: timeout of %ss reached; claiming no more trials", worker_index,
                            tune_config.timeout)
                break
            if parent_pid is not None and os.getppid() != parent_pid:
                logger.warning("worker %d: the process that started it is gone; claiming no more trials",
                               worker_index)
                break
            if not _claim(study, lock=lock, target=tune_config.n_trials):
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
            trials_run += 1
    finally:
        lock.close()
    summary = summarize(study, storage=tune_config.storage, trials_run=trials_run, epochs_trained=sum(epochs_trained))
    logger.info("worker %d ran %d trial(s); study %s now has %d: %s", worker_index, trials_run,
                tune_config.study_name, summary.n_trials, dict(summary.states))
    return summary


#: User attribute stamping a reservation with its wall-clock time (seconds since the epoch).
RESERVED_AT = "reserved_at"
#: A WAITING trial older than this was reserved by a worker that died before starting it (a live one
#: starts its reservation within milliseconds), or re-queued by the heartbeat check: anyone may run it.
ORPHAN_AFTER_S = 60.0


def _claim(study: optuna.Study, *, lock: ClaimLock, target: int) -> bool:
    """Reserve the study's next trial; False once the study holds `target` trials.

    The reservation is a WAITING trial enqueued under the lock; `optimize(n_trials=1)` right after
    pops the oldest WAITING trial instead of creating one, so as long as every pop follows its own
    reservation, trials are only ever created under the lock. A worker runs a WAITING trial without
    reserving only if it is an orphan (older than `ORPHAN_AFTER_S`): a fresh one belongs to a worker
    about to pop it, and taking it would make that worker create a trial outside the lock.
    """
    from optuna.trial import TrialState

    with lock.hold():
        trials = study.get_trials(deepcopy=False)
        now = time.time()
        if len(trials) < target:
            study.enqueue_trial({}, user_attrs={RESERVED_AT: now})
            return True
        return any(
            t.state == TrialState.WAITING and now - float(t.user_attrs.get(RESERVED_AT, 0.0)) > ORPHAN_AFTER_S
            for t in trials
        )


class _Reporter:
    """Reports each epoch's value to the trial and answers whether the pruner wants it stopped."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial
        self.epochs = 0
        self.pruned = False
        self.last = math.nan

    def __call__(self, epoch: int, value: float) -> bool:
        self.epochs = max(self.epochs, epoch + 1)
        self.last = float(value)
        # A NaN is not a measurement the pruner can rank; a diverged trial ends as FAIL instead.
        if math.isfinite(self.last):
            self.trial.report(self.last, epoch)
            self.pruned = self.trial.should_prune()
        return self.pruned


def summarize(study: optuna.Study, *, storage: str, trials_run: int = 0, epochs_trained: int = 0) -> StudySummary:
    """A `StudySummary` of the study as stored now."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    return StudySummary(
        study_name=study.study_name,
        storage=redact(storage),
        objective=str(study.user_attrs.get("objective", "")),
        n_trials=len(trials),
        states=states,
        best_value=None if best is None else float(best.value),
        best_trial=None if best is None else best.number,
        best_params=None if best is None else params_to_settings(best.params),
        trials_run=trials_run,
        epochs_trained=epochs_trained,
    )


def format_trial_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> str:
    """One progress line: trial number, state, value, sampled params, epochs, best so far."""
    from optuna.trial import TrialState

    value = "-" if trial.value is None else f"{trial.value:.4f}"
    params = " ".join(
        f"{name.removeprefix(LOSS_WEIGHT_PARAM)}={v:.3g}" if isinstance(v, float) else f"{name}={v}"
        for name, v in trial.params.items()
    )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = max(complete, key=lambda t: t.value) if complete else None
    best_text = "-" if best is None else f"{best.value:.4f} (trial {best.number})"
    epochs = trial.user_attrs.get("epochs_trained", "?")
    line = f"trial {trial.number:>3} {trial.state.name:<8} value={value:<7} [{params}] epochs={epochs} best={best_text}"
    if trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs:
        line += f" error={trial.user_attrs['fail_reason']}"
    return line


def run_workers(
    *,
    workers: int,
    dataset_dir: str | os.PathLike[str] | None,
    tune_config: TuneConfig,
    search_space: SearchSpace | None = None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    trainer: Trainer | None = None,
    on_trial: Callable[[str], None] | None = None,
) -> list[StudySummary]:
    """`run_study` in `workers` local processes on one shared study; one summary per worker.

    Processes are spawned, not forked: TensorFlow's threads do not survive a fork. `trainer` and
    `on_trial` must be picklable (module-level) for `workers > 1`.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"`workers` must be an int >= 1, got {workers!r}")
    kwargs: dict[str, Any] = dict(
        dataset_dir=dataset_dir, tune_config=tune_config, search_space=search_space, model_config=model_config,
        train_config=train_config, trainer=trainer, on_trial=on_trial,
    )
    if workers == 1:
        return [run_study(**kwargs)]
    # Create the study once here: a bad storage fails once, and workers never race to create it.
    _open(tune_config, worker_index=0)
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_study, **kwargs, worker_index=i, parent_pid=os.getpid()) for i in range(workers)]
        return [f.result() for f in futures]


def load_study(*, storage: str, study_name: str) -> optuna.Study:
    """An existing study; ConfigError naming the studies the storage does hold otherwise."""
    import optuna

    store = open_storage(storage, must_exist=True)
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = optuna.get_all_study_names(store)
        raise ConfigError(f"storage {redact(storage)} has no study {study_name!r}; it has {names}") from None


def best_params(*, storage: str, study_name: str) -> dict[str, Any]:
    """The best COMPLETE trial's settings: {"loss_weights": {task: w}, "learning_rate"?, "batch_size"?}.

    Raises:
        NoCompleteTrialError: no trial of the study completed (all pruned, failed or running).
    """
    from optuna.trial import TrialState

    study = load_study(storage=storage, study_name=study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise NoCompleteTrialError(
            f"study {study_name!r} has no completed trial ({len(study.trials)} in all); run more trials "
            "or relax the pruner (--pruner none)"
        )
    return params_to_settings(max(complete, key=lambda t: t.value).params)
