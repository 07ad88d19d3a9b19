"""Model artifacts the benchmarks run: the paper's layers with untrained weights (the work does not depend on them)."""

from __future__ import annotations

from pathlib import Path


def untrained_artifact(out: Path, *, width: float) -> Path:
    """A model artifact with the paper's layers at `width` and random weights."""
    from fer_model.alignment import AlignConfig
    from fer_model.model import ModelConfig, build_model
    from fer_model.model_artifact import save_model_artifact
    from fer_model.training import TrainConfig

    config = ModelConfig(width=width)
    return save_model_artifact(
        out,
        model=build_model(config),
        model_config=config,
        train_config=TrainConfig(epochs=1),
        history={},
        best_epoch=0,
        dataset_manifest_sha256="0" * 64,
        alignment={k: getattr(AlignConfig(), k) for k in AlignConfig.__dataclass_fields__},
    )
