"""KFP component: the list [0, 1, ..., n-1] that a ParallelFor fans tuning workers out over."""

from kfp import dsl

from components._images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def worker_indices(n: int) -> list:
    """Indices of `n` parallel workers; `dsl.ParallelFor` needs a list, a pipeline parameter is an int.

    Raises:
        ConfigError: `n` < 1.
    """
    from fer_model.errors import ConfigError

    if n < 1:
        raise ConfigError(f"`tune_workers` must be >= 1, got {n}")
    return list(range(n))
