"""Run a loss-weight study from one or many workers, and read its result back.

Every worker opens the same study (`load_if_exists`) and claims each trial under a claim lock: it
counts the study's trials and creates the next one in one locked step, so N workers finish with
exactly `n_trials` trials. Trial k samples with TPE seeded from (`seed`, k). A trial that raises is
recorded as FAIL (with its reason) and the study goes on; so is the trial of a worker that died."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
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


def make_sampler(tune_config: TuneConfig, *, trial_number: int) -> optuna.samplers.BaseSampler:
    """TPE seeded from (`tune_config.seed`, the number of the trial about to be drawn).

    Seeding per trial, not per worker, means no two trials of a study share a seed: neither parallel
    workers nor a rerun that resumes the study (issue 15: a resumed worker seeded like the first run
    redrew trial 0's weights). A one-worker study stays reproducible from its seed alone.
    """
    import numpy as np
    import optuna

    seed = int(np.random.SeedSequence([tune_config.seed, trial_number]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed)


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


def _open(tune_config: TuneConfig) -> optuna.Study:
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
        sampler=make_sampler(tune_config, trial_number=0),
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
    if study.metric_names is None:
        # Named, the value reads as "emotion_accuracy" (not "Objective Value") in optuna-dashboard and plots.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([tune_config.objective])
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
        worker_index: This worker's index (0..N-1), recorded on its trials.
        trainer: Trains one trial (default: `FitTrainer(dataset_dir)`, i.e. `fer_model.training.fit`).
        on_trial: Receives a progress line after each trial (number, state, value, params, best so far).
        parent_pid: Set by `run_workers`: once this process's parent is no longer that process (it
            was killed), claim no more trials instead of running the study on as an orphan.

    Returns:
        The study's state after this worker's last trial.
    """
    _check_worker_args(worker_index=worker_index, n_trials=n_trials)
    if trainer is None:
        if dataset_dir is None:
            raise ConfigError("`dataset_dir` is required unless a `trainer` is given")
        trainer = FitTrainer(dataset_dir)
    objective = _TrialObjective(
        trainer=trainer, tune_config=tune_config, worker_index=worker_index,
        search_space=search_space or SearchSpace(), model_config=tune_config.trial_model(model_config or ModelConfig()),
        train_config=train_config or TrainConfig(),
    )
    study = _open(tune_config)
    trials_run = _run_trials(study, objective=objective, tune_config=tune_config, n_trials=n_trials,
                             worker_index=worker_index, on_trial=on_trial, parent_pid=parent_pid)
    summary = summarize(study, storage=tune_config.storage, trials_run=trials_run,
                        epochs_trained=objective.epochs_trained)
    logger.info("worker %d ran %d trial(s); study %s now has %d: %s", worker_index, trials_run,
                tune_config.study_name, summary.n_trials, dict(summary.states))
    return summary


def _check_worker_args(*, worker_index: int, n_trials: int | None) -> None:
    if isinstance(worker_index, bool) or not isinstance(worker_index, int) or worker_index < 0:
        raise ConfigError(f"`worker_index` must be an int >= 0, got {worker_index!r}")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0):
        raise ConfigError(f"`n_trials` must be an int >= 0 or None, got {n_trials!r}")


@dataclass
class _TrialObjective:
    """The Optuna objective of one worker: sample settings, train, record how the trial went."""

    trainer: Trainer
    tune_config: TuneConfig
    worker_index: int
    search_space: SearchSpace
    model_config: ModelConfig
    train_config: TrainConfig
    epochs_trained: int = 0

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        params = suggest_params(trial, search_space=self.search_space, tasks=self.model_config.tasks)
        config = trial_train_config(self.train_config, params, epochs=self.tune_config.epochs)
        reporter = _Reporter(trial)
        started = time.monotonic()
        try:
            result: TrialResult = self.trainer(
                model_config=self.model_config, train_config=config, objective=self.tune_config.objective,
                report=reporter,
            )
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # Optuna records FAIL but not why; the reason goes into trials.csv.
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}"[:500])
            raise
        finally:
            self.epochs_trained += reporter.epochs
            trial.set_user_attr("worker", self.worker_index)
            trial.set_user_attr("epochs_trained", reporter.epochs)
            trial.set_user_attr("train_seconds", round(time.monotonic() - started, 3))
        if reporter.pruned:
            raise optuna.TrialPruned(f"after epoch {reporter.epochs}: {self.tune_config.objective}={reporter.last:.4f}")
        trial.set_user_attr("metrics", {k: float(v) for k, v in result.metrics.items()})
        return float(result.value)


def _run_trials(
    study: optuna.Study,
    *,
    objective: _TrialObjective,
    tune_config: TuneConfig,
    n_trials: int | None,
    worker_index: int,
    on_trial: Callable[[str], None] | None,
    parent_pid: int | None,
) -> int:
    """Claim and run trials until the study is full or this worker must stop; the number run."""
    callbacks = [] if on_trial is None else [lambda s, t: on_trial(format_trial_line(s, t))]
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
            if not _run_next_trial(study, lock=lock, tune_config=tune_config, objective=objective,
                                   callbacks=callbacks):
                break
            trials_run += 1
    finally:
        lock.close()
    return trials_run


#: User attribute naming the process that runs a trial: {"host": ..., "pid_ns": ..., "pid": ...}.
OWNER = "owner"


def _pid_namespace() -> str | None:
    """This process's PID namespace (e.g. "pid:[4026531836]"), None where /proc does not say.

    Containers sharing the host's network also share its host name, yet each has PIDs of its own:
    a PID names a process only inside its namespace.
    """
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _owner() -> dict[str, object]:
    return {"host": socket.gethostname(), "pid_ns": _pid_namespace(), "pid": os.getpid()}


def _run_next_trial(
    study: optuna.Study,
    *,
    lock: ClaimLock,
    tune_config: TuneConfig,
    objective: Callable[[optuna.Trial], float],
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]],
) -> bool:
    """Claim the study's next trial and run it; False (nothing run) once the study is full.

    Counting the trials and creating the next one must be one atomic step, or two workers can both
    see room for one more. `optimize` creates its trial in its first step (`ask`: pop the oldest
    WAITING trial, else create one), so the claim lock is taken before counting and released by the
    objective's first line, once the trial exists and names its owner. Earlier versions enqueued a
    WAITING "reservation" under the lock and let `optimize` pop it after; a slow worker could then
    lose its reservation to a fast one, create a trial outside the lock and leave the fast one's
    reservation WAITING forever (issue 15).

    A WAITING trial (queued by hand, or re-queued by PostgreSQL's heartbeat check) is always run,
    even once the study holds `n_trials`, so no queued point is left behind.
    """
    from optuna.trial import TrialState

    with ExitStack() as claim:
        claim.enter_context(lock.hold())
        trials = study.get_trials(deepcopy=False)
        _fail_trials_of_dead_workers(study, trials)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and len(trials) >= tune_config.n_trials:
            return False
        study.sampler = make_sampler(tune_config, trial_number=len(trials))

        def claimed(trial: optuna.Trial) -> float:
            trial.set_user_attr(OWNER, _owner())
            claim.close()
            return objective(trial)

        study.optimize(claimed, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    return True


def _fail_trials_of_dead_workers(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
    """Mark FAIL each RUNNING trial whose owner was a process of this host and PID namespace that no
    longer exists.

    A worker killed mid-trial (SIGKILL, out of memory) cannot tell the study; without this its trial
    would stay RUNNING forever in a journal study (PostgreSQL's heartbeat check covers pods on other
    hosts). The caller holds the claim lock, so one worker alone fails each such trial; the failed
    trial counts towards `n_trials` like any other. A reused PID keeps the trial RUNNING (never a
    live trial failed).
    """
    from optuna.trial import TrialState

    host, pid_ns = socket.gethostname(), _pid_namespace()
    for t in trials:
        owner = t.user_attrs.get(OWNER)
        if t.state != TrialState.RUNNING or not isinstance(owner, dict) or owner.get("host") != host:
            continue
        # Another container's (or an unknown) namespace: its PIDs mean nothing here, so never judge it.
        if pid_ns is None or owner.get("pid_ns") != pid_ns:
            continue
        if _process_exists(int(owner["pid"])):
            continue
        reason = f"WorkerDied: process {owner['pid']} on {host} ended during the trial"
        logger.warning("trial %d: %s; marking it FAIL", t.number, reason)
        # Optuna has no public setter for another worker's trial; its own stale-trial check uses this.
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
        study.tell(t.number, state=TrialState.FAIL)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
    _open(tune_config)
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
