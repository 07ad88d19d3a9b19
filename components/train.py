"""KFP component: dataset artifact -> model artifact (masked, weighted multi-task training)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    model_config: str = "",
    train_config: str = "",
    loss_weights: str = "",
    checkpoint_uri: str = "",
) -> None:
    """Train the paper's CNN on the dataset artifact and write the model artifact.

    Args:
        dataset: A dataset artifact folder (from `prepare`).
        model: The model artifact folder (model.keras, saved_model/1, config.json, history.json).
        metrics: Validation metrics at the best epoch (shown in the KFP UI).
        model_config: `ModelConfig` as a JSON object (width, tasks, augment, ...); "" = its defaults.
        train_config: `TrainConfig` as a JSON object (epochs, batch size, learning rate, loss
            weights, seed, ...); "" = its defaults, the paper's recipe.
        loss_weights: JSON object {task: weight} (the tuning step's output), laid over
            `train_config`'s loss weights: "" or "{}" changes none.
        checkpoint_uri: Where the epoch checkpoint lives (a gs:// prefix, or a folder that survives
            the pod); "" = beside the model output (`fer_model.train_run.checkpoint_location`). A
            retried task finds it there and resumes from the last finished epoch.
    """
    import dataclasses
    import logging
    import sys

    from fer_model._settings import parse_loss_weights
    from fer_model.model import ModelConfig
    from fer_model.model_artifact import read_model_config
    from fer_model.train_run import checkpoint_location
    from fer_model.train_run import train as train_model
    from fer_model.training import TrainConfig

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if hasattr(sys.stdout, "reconfigure"):
        # A pod's stdout is a pipe (block-buffered): flush each line so epochs show in the logs as they end.
        sys.stdout.reconfigure(line_buffering=True)
    recipe = TrainConfig.from_json(train_config)
    recipe = dataclasses.replace(recipe, loss_weights={**recipe.loss_weights, **parse_loss_weights(loss_weights)})
    result = train_model(
        dataset_dir=dataset.path,
        out_dir=model.path,
        model_config=ModelConfig.from_json(model_config),
        train_config=recipe,
        checkpoint_dir=checkpoint_uri or checkpoint_location(model_uri=model.uri, model_path=model.path),
    )
    best = {k: float(v[result.best_epoch]) for k, v in result.history.items() if k.startswith("val_")}
    for name, value in sorted(best.items()):
        metrics.log_metric(name, value)
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("epochs_run", len(next(iter(result.history.values()), [])))
    model.metadata["framework"] = "keras"
    model.metadata["format"] = "fer-mtl-model/v1"
    model.metadata["best_epoch"] = result.best_epoch
    model.metadata["loss_weights"] = dict(recipe.loss_weights)
    model.metadata["dataset_manifest_sha256"] = read_model_config(model.path).dataset_manifest_sha256
    model.metadata.update({k: round(v, 6) for k, v in best.items() if k.endswith("accuracy")})
