"""KFP component: one Optuna worker of the shared loss-weight study (fanned out by a ParallelFor)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tune_worker(
    dataset: Input[Dataset],
    storage_url: str,
    study_name: str,
    n_trials: int,
    epochs: int,
    width: float,
    seed: int,
    worker_index: int,
    objective: str = "emotion_accuracy",
    pruner: str = "median",
) -> int:
    """Run trials of the study until it holds `n_trials` trials in all (every worker together).

    Args:
        dataset: A dataset artifact folder (from `prepare`).
        storage_url: postgresql://user:${OPTUNA_DB_PASSWORD}@host:5432/db (environment variables are
            expanded here, so the password can come from a Kubernetes Secret as an env var and never
            appears in the pipeline spec), or a journal file path for local runs.
        study_name: The study every worker shares.
        n_trials: Study-wide number of trials.
        epochs: Epochs per trial.
        width: Layer width multiplier of the trial models.
        seed: Sampler seed; this worker samples with `seed + worker_index`.
        worker_index: This worker's index in the ParallelFor.
        objective: emotion_accuracy, emotion_macro_f1 or weighted_mean.
        pruner: median, hyperband or none.

    Returns:
        The number of trials this worker ran.
    """
    import logging
    import os

    from fer_model.model import ModelConfig
    from fer_model.tuning import TuneConfig, run_study

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run_study(
        dataset_dir=dataset.path,
        tune_config=TuneConfig(
            study_name=study_name, storage=os.path.expandvars(storage_url), n_trials=n_trials,
            objective=objective, pruner=pruner, seed=seed, epochs=epochs,
        ),
        model_config=ModelConfig(width=width),
        worker_index=worker_index,
        on_trial=print,
    )
    return summary.trials_run
