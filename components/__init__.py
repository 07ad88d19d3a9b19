"""Kubeflow Pipelines v2 components: one per module, named after its function.

Each is a lightweight `@dsl.component` whose body only plumbs arguments into `fer_model`; the
base image (components/_images.py) has fer-mtl installed, so nothing is pip-installed at run time.
"""

from components.evaluate import evaluate
from components.prepare import prepare
from components.train import train
from components.worker_indices import worker_indices

__all__ = ["evaluate", "prepare", "train", "worker_indices"]
