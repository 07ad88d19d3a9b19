"""KFP component: one Optuna worker of the shared loss-weight study (fanned out by a ParallelFor)."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tune_worker(
    dataset: Input[Dataset],
    storage_url: str,
    study_name: str,
    worker_index: int,
    tune_config: str = "",
    model_config: str = "",
    train_config: str = "",
) -> int:
    """Run trials of the study until it holds `tune_config`'s `n_trials` trials in all (every worker together).

    Each trial trains with the recipe of the run being tuned for (`model_config`, `train_config`: the
    same JSON the train step gets), changing only the sampled loss weights and, per `tune_config`,
    the epoch budget and width.

    Args:
        dataset: A dataset artifact folder (from `prepare`).
        storage_url: postgresql://user:${OPTUNA_DB_PASSWORD}@host:5432/db (environment variables are
            expanded here, so the password can come from a Kubernetes Secret as an env var and never
            appears in the pipeline spec), or a journal file path for local runs.
        study_name: The study every worker shares.
        worker_index: This worker's index in the ParallelFor; it samples with `seed + worker_index`.
        tune_config: `TuneConfig` fields other than the study name and storage, as a JSON object
            (n_trials, epochs, width, objective, pruner, seed, ...); "" = their defaults.
        model_config: The run's `ModelConfig` as a JSON object ("" = its defaults).
        train_config: The run's `TrainConfig` as a JSON object ("" = its defaults).

    Returns:
        The number of trials this worker ran.
    """
    import logging
    import os

    from fer_model._settings import parse_json_object
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig
    from fer_model.tuning import TuneConfig, run_study

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = parse_json_object(tune_config, name="tune_config")
    summary = run_study(
        dataset_dir=dataset.path,
        tune_config=TuneConfig.from_dict(
            {**settings, "study_name": study_name, "storage": os.path.expandvars(storage_url)}
        ),
        model_config=ModelConfig.from_json(model_config),
        train_config=TrainConfig.from_json(train_config),
        worker_index=worker_index,
        on_trial=print,
    )
    return summary.trials_run
