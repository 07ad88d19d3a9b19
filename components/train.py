"""KFP component: dataset artifact -> model artifact (masked, weighted multi-task training)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components._images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    dataset: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    epochs: int = 100,
    batch_size: int = 32,
    learning_rate: float = 3e-4,
    loss_weights: str = "",
    width: float = 1.0,
    augment: bool = False,
    early_stopping_patience: int = 12,
    mixed_precision: bool = False,
    seed: int = 0,
) -> None:
    """Train the paper's CNN on the dataset artifact and write the model artifact.

    Args:
        dataset: A dataset artifact folder (from `prepare`).
        model: The model artifact folder (model.keras, saved_model/1, config.json, history.json).
        metrics: Validation metrics at the best epoch (shown in the KFP UI).
        epochs: Upper bound; early stopping on validation emotion accuracy usually ends sooner.
        batch_size: Training batch size.
        learning_rate: Adam's initial learning rate.
        loss_weights: JSON object {task: weight} (the tuning step's output), laid over the
            paper's weights: "" or "{}" trains with the paper's weights.
        width: Filter-count multiplier (1.0 = the paper's network).
        augment: Random flips/shifts inside the model while training.
        early_stopping_patience: Epochs without a better validation emotion accuracy before stopping.
        mixed_precision: float16 compute (GPU).
        seed: Seeds initialisation and shuffling.
    """
    import json
    import logging

    from fer_model import training
    from fer_model.errors import ConfigError
    from fer_model.model import ModelConfig
    from fer_model.model_artifact import read_model_config
    from fer_model.tasks import DEFAULT_LOSS_WEIGHTS

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        weights = json.loads(loss_weights) if loss_weights.strip() else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"`loss_weights` must be JSON like '{{\"emotion\": 2.0}}', got {loss_weights!r}") from e
    if not isinstance(weights, dict):
        raise ConfigError(f"`loss_weights` must be a JSON object, got {loss_weights!r}")
    train_config = training.TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        loss_weights={**DEFAULT_LOSS_WEIGHTS, **weights},
        early_stopping_patience=early_stopping_patience,
        mixed_precision=mixed_precision,
        seed=seed,
    )
    result = training.train(
        dataset_dir=dataset.path,
        out_dir=model.path,
        model_config=ModelConfig(width=width, augment=augment),
        train_config=train_config,
    )
    best = {k: float(v[result.best_epoch]) for k, v in result.history.items() if k.startswith("val_")}
    for name, value in sorted(best.items()):
        metrics.log_metric(name, value)
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("epochs_run", len(next(iter(result.history.values()), [])))
    model.metadata["framework"] = "keras"
    model.metadata["format"] = "fer-mtl-model/v1"
    model.metadata["best_epoch"] = result.best_epoch
    model.metadata["loss_weights"] = dict(train_config.loss_weights)
    model.metadata["dataset_manifest_sha256"] = read_model_config(model.path).dataset_manifest_sha256
    model.metadata.update({k: round(v, 6) for k, v in best.items() if k.endswith("accuracy")})
