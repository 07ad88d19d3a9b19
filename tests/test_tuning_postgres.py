"""fer_model.tuning against a real PostgreSQL on 127.0.0.1 (the storage pipeline pods share).

The server is a throwaway one (tests/_postgres.py). Without PostgreSQL binaries the module is
skipped locally, but fails under CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from fer_model.errors import StorageError
from fer_model.tasks import TASK_NAMES
from fer_model.tuning import TuneConfig, best_params, load_study, run_study, run_workers, write_study_report
from fer_model.tuning._storage import ClaimLock
from tests._postgres import find_pg_bin, postgres_server, restart_server
from tests.test_tuning import FakeTrainer, FlakyTrainer, _spawn_python, _wait_for

if find_pg_bin() is None:
    reason = "PostgreSQL binaries (initdb, pg_ctl) not found; apt-get install postgresql"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run must install them)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def postgres_url():
    with postgres_server() as server:
        yield server.url


def _config(url: str, study: str, **overrides) -> TuneConfig:
    return TuneConfig(**{"study_name": study, "storage": url, "n_trials": 4, "epochs": 3, "pruner": "none",
                         "seed": 0, **overrides})


def test_parallel_workers_on_postgres_stop_at_exactly_n(postgres_url):
    config = _config(postgres_url, "parallel", n_trials=7)
    summaries = run_workers(workers=2, dataset_dir=None, tune_config=config,
                            trainer=FakeTrainer(seconds_per_epoch=0.15))
    study = load_study(storage=postgres_url, study_name="parallel")
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(7))  # exactly 7, no duplicate numbers
    # Two workers created-or-loaded the study; its metric is named once, after the objective.
    assert study.metric_names == [config.objective]
    assert {t.state.name for t in trials} == {"COMPLETE"}
    assert sum(s.trials_run for s in summaries) == 7
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}


def test_failure_resume_and_report_on_postgres(postgres_url, tmp_path):
    run_study(dataset_dir=None, tune_config=_config(postgres_url, "resume", n_trials=3), trainer=FlakyTrainer({1}))
    summary = run_study(dataset_dir=None, tune_config=_config(postgres_url, "resume", n_trials=5),
                        trainer=FakeTrainer())
    assert summary.trials_run == 2 and summary.states == {"COMPLETE": 4, "FAIL": 1}
    out = write_study_report(storage=postgres_url, study_name="resume", out_dir=tmp_path)
    report = json.loads((out / "best_params.json").read_text())
    assert report["best"]["loss_weights"] == best_params(storage=postgres_url, study_name="resume")["loss_weights"]
    # The password never reaches a report file.
    password = postgres_url.split(":")[2].split("@")[0]
    for name in ("best_params.json", "trials.csv"):
        assert password not in (out / name).read_text()
    assert report["storage"].startswith("postgresql://optuna:***@127.0.0.1:")


def test_claim_lock_is_exclusive_per_study(postgres_url):
    import sqlalchemy

    from fer_model.tuning._storage import _advisory_key, driver_url

    lock = ClaimLock(postgres_url, "locked")
    engine = sqlalchemy.create_engine(driver_url(postgres_url))
    try:
        with lock.hold(), engine.connect() as other:
            # While held, another session cannot take the same advisory lock...
            taken = other.execute(sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)"),
                                  {"k": _advisory_key("locked")}).scalar()
            assert taken is False
        with engine.connect() as other:
            # ...and once released, it can.
            assert other.execute(sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:k)"),
                                 {"k": _advisory_key("locked")}).scalar() is True
    finally:
        lock.close()
        engine.dispose()


def test_wrong_password_is_a_storage_error_without_the_password(postgres_url):
    bad = postgres_url.replace(postgres_url.split(":")[2].split("@")[0], "not-the-password")
    with pytest.raises(StorageError, match=r"cannot open the study database postgresql://optuna:\*\*\*@") as info:
        run_study(dataset_dir=None, tune_config=_config(bad, "x"), trainer=FakeTrainer())
    assert "not-the-password" not in str(info.value)


# --- faults: a killed worker, a restarted server ---------------------------------------------


def _worker_code(url: str, study: str, *, n_trials: int, seconds_per_epoch: float, host: str | None = None,
                 **overrides) -> str:
    """A `run_study` worker as a script; `host` pretends it runs on another node (a pod elsewhere)."""
    fake_host = f"import socket; socket.gethostname = lambda: {host!r}\n" if host else ""
    return (
        fake_host +
        "from tests.test_tuning import FakeTrainer\n"
        "from tests.test_tuning_postgres import _config\n"
        "from fer_model.tuning import run_study\n"
        f"s = run_study(dataset_dir=None, tune_config=_config({url!r}, {study!r}, n_trials={n_trials}, "
        f"**{overrides!r}), trainer=FakeTrainer(seconds_per_epoch={seconds_per_epoch}))\n"
        "print('trials_run', s.trials_run, flush=True)\n"
    )


def _first_trial_running(url: str, study: str, *, params: int = 0) -> bool:
    """Trial 0 runs, its owner recorded and at least `params` of its parameters sampled."""
    from fer_model.errors import ConfigError

    try:
        trials = load_study(storage=url, study_name=study).trials
    except ConfigError:  # the worker has not created the study yet
        return False
    return (bool(trials) and trials[0].state.name == "RUNNING" and "owner" in trials[0].user_attrs
            and len(trials[0].params) >= params)


def test_a_worker_killed_mid_trial_on_postgres_is_failed_and_the_study_completes(postgres_url):
    worker = _spawn_python(_worker_code(postgres_url, "killed", n_trials=3, seconds_per_epoch=600))
    try:
        _wait_for(lambda: _first_trial_running(postgres_url, "killed"), what="the worker's first trial to start")
    finally:
        worker.kill()
        worker.wait()
    summary = run_study(dataset_dir=None, tune_config=_config(postgres_url, "killed", n_trials=3),
                        trainer=FakeTrainer())
    trials = load_study(storage=postgres_url, study_name="killed").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].user_attrs["fail_reason"].startswith(f"WorkerDied: process {worker.pid} ")
    assert (summary.trials_run, summary.n_trials) == (2, 3)


def test_a_pod_killed_mid_trial_is_failed_by_heartbeat_and_its_point_retried(postgres_url):
    # A pod on another node: its PID means nothing here, so only the missed heartbeats tell it died.
    beats = {"heartbeat_interval": 1, "grace_period": 3}
    worker = _spawn_python(_worker_code(postgres_url, "pod", n_trials=3, seconds_per_epoch=600, host="other-pod",
                                        **beats))
    try:
        # Once every loss weight is drawn, so that the whole point can be compared with its retry.
        _wait_for(lambda: _first_trial_running(postgres_url, "pod", params=len(TASK_NAMES)),
                  what="the pod's first trial to start")
    finally:
        worker.kill()
        worker.wait()
    _wait_for(lambda: _heartbeat_age(postgres_url, "pod") > beats["grace_period"], what="the grace period to pass")
    summary = run_study(dataset_dir=None, tune_config=_config(postgres_url, "pod", n_trials=3, **beats),
                        trainer=FakeTrainer())
    trials = load_study(storage=postgres_url, study_name="pod").trials
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    # The dead pod's point was queued again and run, not lost.
    assert trials[1].params == trials[0].params
    assert trials[1].system_attrs.get("failed_trial") == trials[0].number
    assert summary.trials_run == 2


def _heartbeat_age(url: str, study: str) -> float:
    """Seconds since the first trial's last heartbeat (by the server's clock)."""
    import sqlalchemy

    from fer_model.tuning._storage import driver_url

    engine = sqlalchemy.create_engine(driver_url(url))
    try:
        with engine.connect() as conn:
            return float(conn.execute(sqlalchemy.text(
                "SELECT EXTRACT(EPOCH FROM now() - h.heartbeat) FROM trial_heartbeats h "
                "JOIN trials t ON t.trial_id = h.trial_id JOIN studies s ON s.study_id = t.study_id "
                "WHERE s.study_name = :name AND t.number = 0"), {"name": study}).scalar() or 0.0)
    finally:
        engine.dispose()


def test_workers_survive_a_postgres_restart_mid_study(tmp_path):
    # Its own server: restarting the module's would disturb the other tests.
    with postgres_server() as server:
        n_trials = 6
        workers = [_spawn_python(_worker_code(server.url, "restart", n_trials=n_trials, seconds_per_epoch=0.5))
                   for _ in range(2)]
        try:
            _wait_for(lambda: _first_trial_running(server.url, "restart"), what="the first trial to start")
            started = time.monotonic()
            restart_server(server)
            restart_s = time.monotonic() - started
            outputs = [w.communicate(timeout=300)[0] for w in workers]
        finally:
            for w in workers:
                w.kill()
                w.wait()
        assert [w.returncode for w in workers] == [0, 0], outputs
        trials = load_study(storage=server.url, study_name="restart").trials
        assert sorted(t.number for t in trials) == list(range(n_trials))
        assert {t.state.name for t in trials} == {"COMPLETE"}
        assert sum(int(o.split()[-1]) for o in outputs) == n_trials
        print(f"server restart took {restart_s:.1f}s")
