"""fer_model.tuning against a real PostgreSQL on 127.0.0.1 (the storage pipeline pods share).

The server is a throwaway one (tests/_postgres.py). Without PostgreSQL binaries the module is
skipped locally, but fails under CI (CI=true), where .ci/run installs them.
"""

from __future__ import annotations

import json
import os

import pytest

from fer_model.errors import StorageError
from fer_model.tuning import TuneConfig, best_params, load_study, run_study, run_workers, write_study_report
from fer_model.tuning._storage import ClaimLock
from tests._postgres import find_pg_bin, postgres_server
from tests.test_tuning import FakeTrainer, FlakyTrainer

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
