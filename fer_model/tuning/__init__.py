"""Optuna search over the four loss weights (and optionally learning rate and batch size).

`run_study` is what a worker runs (many may share one study through a journal file or PostgreSQL);
`best_params` and `write_study_report` read the result. Nothing here imports TensorFlow until a
real trial trains, and Optuna is imported inside functions, so config objects stay cheap to use.
"""

from fer_model.tuning.config import (
    DEFAULT_WEIGHT_RANGE,
    OBJECTIVES,
    PRUNERS,
    ObjectiveName,
    PrunerName,
    SearchSpace,
    TuneConfig,
)
from fer_model.tuning.objective import EpochReport, FitTrainer, Trainer, TrialResult
from fer_model.tuning.report import write_study_report
from fer_model.tuning.study import (
    NoCompleteTrialError,
    StudySummary,
    best_params,
    load_study,
    run_study,
    run_workers,
)

__all__ = [
    "DEFAULT_WEIGHT_RANGE",
    "OBJECTIVES",
    "PRUNERS",
    "EpochReport",
    "FitTrainer",
    "NoCompleteTrialError",
    "ObjectiveName",
    "PrunerName",
    "SearchSpace",
    "StudySummary",
    "Trainer",
    "TrialResult",
    "TuneConfig",
    "best_params",
    "load_study",
    "run_study",
    "run_workers",
    "write_study_report",
]
