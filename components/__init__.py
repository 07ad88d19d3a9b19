"""Kubeflow Pipelines v2 components: one per module, named after its function.

Each is a lightweight `@dsl.component` whose body only plumbs arguments into `fer_model`; the
base image (components/_images.py) has fer-mtl installed, so nothing is pip-installed at run time.
"""

from components.deploy import deploy
from components.evaluate import evaluate
from components.gate import gate
from components.prepare import prepare
from components.select_best import select_best
from components.teach import teach
from components.train import train
from components.tune_worker import tune_worker
from components.worker_indices import worker_indices

__all__ = ["deploy", "evaluate", "gate", "prepare", "select_best", "teach", "train", "tune_worker", "worker_indices"]
