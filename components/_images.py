"""The container images our components run in, pinned by tag.

These are the compile-time defaults. The `fer-mtl pipeline compile` command may override them
(flags or FER_*_IMAGE environment variables) through `pipelines.fer_pipeline.PipelineImages`;
nothing here reads the environment, so importing a component is free of side effects.
"""

from __future__ import annotations

REGISTRY = "ghcr.io/fer-mtl"
VERSION = "0.1.0"

#: fer-mtl with TensorFlow (CPU): prepare, evaluate, tune, gate, deploy (images/component/Dockerfile).
CPU_IMAGE = f"{REGISTRY}/fer-mtl-cpu:{VERSION}"
#: fer-mtl with TensorFlow and CUDA: training (images/train-gpu/Dockerfile).
GPU_IMAGE = f"{REGISTRY}/fer-mtl-gpu:{VERSION}"
#: The KServe predictor, entrypoint `fer-mtl serve` (images/predictor/Dockerfile).
PREDICTOR_IMAGE = f"{REGISTRY}/fer-mtl-predictor:{VERSION}"
