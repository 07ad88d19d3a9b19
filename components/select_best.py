"""KFP component: the study's best loss weights (or the defaults, if nothing completed) and its report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Output

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def select_best(
    study_report: Output[HTML],
    best: Output[Artifact],
    storage_url: str,
    study_name: str,
    train_config: str = "",
) -> str:
    """Read the finished study; return the best loss weights as a JSON object string.

    Args:
        study_report: plots.html (optimization history, learning curves, importances, slices), offline.
        best: A folder with best_params.json and trials.csv; its metadata says where the weights came
            from (`source`: "study" or "default") and, for the study, the best value and trial.
        storage_url: The workers' storage URL or journal path (environment variables expanded).
        study_name: The study.
        train_config: The run's `TrainConfig` as a JSON object; its loss weights are returned when no
            trial completed ("" = the defaults, the paper's).

    Returns:
        JSON {task: weight}, ready for the train component's `loss_weights`.
    """
    import json
    import logging
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from fer_model.training import TrainConfig
    from fer_model.tuning import write_study_report

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    defaults = dict(TrainConfig.from_json(train_config).loss_weights)

    with tempfile.TemporaryDirectory() as tmp:
        out = write_study_report(storage=os.path.expandvars(storage_url), study_name=study_name, out_dir=tmp)
        Path(study_report.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "plots.html", study_report.path)
        Path(best.path).mkdir(parents=True, exist_ok=True)
        for name in ("best_params.json", "trials.csv"):
            shutil.copyfile(out / name, Path(best.path) / name)
        report = json.loads((out / "best_params.json").read_text())

    best.metadata["n_trials"] = report["n_trials"]
    best.metadata["states"] = report["states"]
    best.metadata["objective"] = report["objective"]
    if report["best"] is None:
        weights = defaults
        best.metadata["source"] = "default"
        best.metadata["note"] = "no trial completed; returning train_config's loss weights"
        logging.getLogger(__name__).warning("study %s has no completed trial; using defaults %s", study_name, weights)
    else:
        weights = report["best"]["loss_weights"]
        best.metadata["source"] = "study"
        best.metadata["best_value"] = report["best"]["value"]
        best.metadata["best_trial"] = report["best"]["trial"]
    best.metadata["loss_weights"] = weights
    return json.dumps(weights, sort_keys=True)
