"""The optimizer and learning-rate schedule a `TrainConfig` asks for.

"plateau" is the paper's recipe: a constant rate that ReduceLROnPlateau lowers (callbacks in
`training`). "cosine" and "onecycle" are per-step schedules that reach ~0 at the last epoch, so a
short run still ends annealed; they live in the optimizer, whose step counter is checkpointed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import keras


class OptimizerSettings(Protocol):
    """The fields of `training.TrainConfig` read here (a protocol, so this module need not import training)."""

    epochs: int
    learning_rate: float
    schedule: str
    warmup_epochs: int
    optimizer: str
    weight_decay: float

#: One-cycle starts at peak / this and ends at peak / (this * 1e4) (Smith & Topin's defaults).
_ONECYCLE_DIV = 25.0
#: One-cycle's ramp when no warm-up is configured: this fraction of the run.
_ONECYCLE_RAMP = 0.3
#: Nesterov momentum for SGD (Khaireddin & Chen's recipe).
SGD_MOMENTUM = 0.9


def learning_rate(train_config: OptimizerSettings, *, steps_per_epoch: int) -> Any:
    """A float (plateau) or a `WarmupDecay` schedule over `epochs * steps_per_epoch` steps."""
    if train_config.schedule == "plateau":
        return train_config.learning_rate
    from fer_model._keras_objects import WarmupDecay

    peak = train_config.learning_rate
    total = train_config.epochs * steps_per_epoch
    warmup = min(train_config.warmup_epochs * steps_per_epoch, total - 1)
    if train_config.schedule == "cosine":
        return WarmupDecay(peak, total_steps=total, warmup_steps=warmup, initial=0.0, final=0.0)
    ramp = warmup or round(_ONECYCLE_RAMP * total)
    return WarmupDecay(peak, total_steps=total, warmup_steps=ramp, initial=peak / _ONECYCLE_DIV,
                       final=peak / (_ONECYCLE_DIV * 1e4))


def build_optimizer(train_config: OptimizerSettings, *, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam or SGD (Nesterov momentum 0.9), with the configured schedule and decoupled weight decay."""
    import keras

    rate = learning_rate(train_config, steps_per_epoch=steps_per_epoch)
    weight_decay = train_config.weight_decay or None
    if train_config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=SGD_MOMENTUM, nesterov=True,
                                    weight_decay=weight_decay)
    return keras.optimizers.Adam(learning_rate=rate, weight_decay=weight_decay)
