"""The fer-mtl training pipeline: one KFP v2 DAG from sources to a deployed InferenceService.

    prepare -> teach -> worker_indices -> ParallelFor(tune_worker) -> select_best
            -> train (GPU) -> evaluate -> gate -> If(deploy and passed) -> deploy

The teacher stage labels the faces without a task's true label with that task's teacher model
(`teachers`, empty by default); with no teachers it passes the dataset through. It is a step that
always runs rather than a condition, because KFP hands a conditional step's output on only through
an else branch, which here would have to be a second train step.

The same DAG compiles for a cluster (`fer-mtl pipeline compile`) and runs locally under
`kfp.local.SubprocessRunner(use_venv=False)` (`fer-mtl pipeline run --local`). Images are chosen
when the pipeline is built (`build_pipeline(images=...)`), so a compile can point every task at
another registry without anything reading the environment at import time.
"""

# No `from __future__ import annotations`: KFP reads the pipeline signature's real types.
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from kfp import dsl

from components import deploy, evaluate, gate, prepare, select_best, teach, train, tune_worker, worker_indices
from components._images import CPU_IMAGE, GPU_IMAGE, PREDICTOR_IMAGE
from fer_model._settings import Settings, defaults
from fer_model.alignment import AlignConfig
from fer_model.errors import ConfigError
from fer_model.model import ModelConfig
from fer_model.release.deploy import Resources
from fer_model.teachers import TeachConfig
from fer_model.training import TrainConfig
from fer_model.tuning.config import TuneConfig

logger = logging.getLogger(__name__)

PIPELINE_NAME = "fer-mtl"


@dataclass(frozen=True)
class PipelineImages:
    """Container images per role: `cpu` for most steps, `gpu` for training, `predictor` for serving."""

    cpu: str = CPU_IMAGE
    gpu: str = GPU_IMAGE
    predictor: str = PREDICTOR_IMAGE

    def __post_init__(self) -> None:
        for role in ("cpu", "gpu", "predictor"):
            image = getattr(self, role)
            if not isinstance(image, str) or not image or any(c.isspace() for c in image) or ":" not in image:
                raise ConfigError(f"`{role}` image must be a pinned reference like REGISTRY/NAME:TAG, got {image!r}")


# Sized for the paper-width model on FER2013 + RAF-DB (~45k faces): prepare and evaluation are
# bounded by alignment and inference over the whole set; train holds the arrays (~110 MB) plus TF.
DEFAULT_RESOURCES: MappingProxyType[str, Resources] = MappingProxyType(
    {
        "prepare": Resources(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G"),
        # Teachers predict over the train split: inference only, like evaluation.
        "teach": Resources(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G"),
        "worker-indices": Resources(cpu_request="100m", cpu_limit="500m", memory_request="256M", memory_limit="512M"),
        "tune-worker": Resources(cpu_request="4", cpu_limit="8", memory_request="8G", memory_limit="16G"),
        "select-best": Resources(cpu_request="500m", cpu_limit="1", memory_request="1G", memory_limit="2G"),
        "train": Resources(cpu_request="4", cpu_limit="8", memory_request="16G", memory_limit="32G"),
        "evaluate": Resources(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G"),
        "gate": Resources(cpu_request="250m", cpu_limit="1", memory_request="512M", memory_limit="1G"),
        "deploy": Resources(cpu_request="250m", cpu_limit="1", memory_request="512M", memory_limit="1G"),
    }
)


@dataclass(frozen=True)
class TaskPolicy:
    """How each task is retried: transient failures (node pre-emption, registry or storage
    hiccups) get `retries` more tries with exponential backoff from `backoff`."""

    retries: int = 2
    backoff: str = "30s"
    backoff_factor: float = 2.0
    backoff_max: str = "3600s"
    resources: MappingProxyType[str, Resources] = field(default_factory=lambda: DEFAULT_RESOURCES)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ConfigError(f"`retries` must be >= 0, got {self.retries}")
        if self.backoff_factor < 1:
            raise ConfigError(f"`backoff_factor` must be >= 1, got {self.backoff_factor}")


def _configure(task: Any, key: str, *, image: str, policy: TaskPolicy, cache: bool = True) -> Any:
    """Apply the image, resources, retry and caching policy of `key` to one task."""
    res = policy.resources[key]
    task.set_container_image(image)
    task.set_cpu_request(res.cpu_request).set_cpu_limit(res.cpu_limit)
    task.set_memory_request(res.memory_request).set_memory_limit(res.memory_limit)
    if policy.retries:
        task.set_retry(
            num_retries=policy.retries,
            backoff_duration=policy.backoff,
            backoff_factor=policy.backoff_factor,
            backoff_max_duration=policy.backoff_max,
        )
    task.set_caching_options(cache)
    return task


#: The Secret (manifests/base/tuning-postgres.yaml) whose `password` key tune workers get as
#: OPTUNA_DB_PASSWORD, which `tuning_storage` may reference as ${OPTUNA_DB_PASSWORD}.
TUNING_SECRET = "fer-mtl-tuning-postgres"
TUNING_PASSWORD_ENV = "OPTUNA_DB_PASSWORD"


#: Where GPU steps run (pipeline parameters `gpu_node_selector` and `gpu_tolerations`, these by
#: default): a GKE T4 pool; GPU pools are tainted `nvidia.com/gpu` so that only GPU pods land there.
GPU_NODE_SELECTOR: Mapping[str, str] = MappingProxyType({"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"})
GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
)


def _on_gpu(task: Any, *, image: str, node_selector: Any, tolerations: Any) -> Any:
    """One GPU for `task`, on the nodes the run's `gpu_node_selector` and `gpu_tolerations` name.

    kfp-kubernetes takes a run-time selector or toleration only as a JSON parameter
    (`add_node_selector_json`, `add_toleration_json`); `add_node_selector` / `add_toleration`
    take compile-time strings. kfp.local ignores all of it.
    """
    from kfp import kubernetes

    task.set_container_image(image)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    return task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)


#: The settings each step gets as one JSON object, by pipeline parameter name. Their defaults are
#: the dataclasses' own; `tune_config` holds every `TuneConfig` field but the study name and
#: storage, which the run supplies (its id, `tuning_storage`).
STEP_CONFIGS: MappingProxyType[str, type[Settings]] = MappingProxyType(
    {"align_config": AlignConfig, "model_config": ModelConfig, "train_config": TrainConfig, "tune_config": TuneConfig,
     "teach_config": TeachConfig}
)
# Stand-ins for the run-time study fields, only so a `tune_config` can be validated before a run.
_RUN_FILLS = {"study_name": "pipeline-run", "storage": "pipeline-run.journal"}


def step_config_json(name: str, values: Mapping[str, Any]) -> str:
    """Validate one step's settings (`name` a key of STEP_CONFIGS) and return them as JSON."""
    cls = STEP_CONFIGS[name]
    if name == "tune_config":
        config = cls.from_dict({**values, **_RUN_FILLS}).to_dict()
        return json.dumps({k: v for k, v in config.items() if k not in _RUN_FILLS}, sort_keys=True)
    return cls.from_dict(values).to_json()


def _default_json(name: str) -> str:
    return step_config_json(name, defaults(STEP_CONFIGS[name]))


def _prepare_step(*, sources: Any, fingerprint: Any, sample_n: Any, align_config: Any, split_mode: Any, limit: Any,
                  workers: Any, seed: Any, drop_training_copies: Any, near_copies: Any, images: PipelineImages,
                  policy: TaskPolicy) -> Any:
    prep = prepare(
        sources=sources, sample_n=sample_n, align_config=align_config, split_mode=split_mode, limit=limit,
        workers=workers, seed=seed, sources_fingerprint=fingerprint, drop_training_copies=drop_training_copies,
        near_copies=near_copies,
    ).set_display_name("prepare dataset")
    return _configure(prep, "prepare", image=images.cpu, policy=policy)


def _teach_step(*, dataset: Any, teachers: Any, teach_config: Any, images: PipelineImages, policy: TaskPolicy
                ) -> Any:
    taught = teach(dataset=dataset, teachers=teachers, teach_config=teach_config).set_display_name("teachers label")
    return _configure(taught, "teach", image=images.cpu, policy=policy)


def _tune_steps(*, dataset: Any, storage: Any, workers: Any, tune_config: Any, model_config: Any, train_config: Any,
                images: PipelineImages, policy: TaskPolicy, tuning_secret: str | None, gpu: Mapping[str, Any] | None
                ) -> Any:
    """Tune workers in a ParallelFor, all in one study, then the best loss weights; returns select_best's task."""
    # One Optuna study per run, named by the run's id, shared by every worker.
    study_name = dsl.PIPELINE_JOB_ID_PLACEHOLDER
    fan_out = worker_indices(n=workers).set_display_name("tuning workers")
    _configure(fan_out, "worker-indices", image=images.cpu, policy=policy)
    with dsl.ParallelFor(fan_out.output) as worker_index:
        # Trials train with the run's own model and training settings: the weights are tuned for
        # the recipe the train step then uses.
        tune = tune_worker(
            dataset=dataset, storage_url=storage, study_name=study_name, worker_index=worker_index,
            tune_config=tune_config, model_config=model_config, train_config=train_config,
        ).set_display_name("tune loss weights")
        # Trials land in the shared study, so a cached worker would only skip its share.
        _configure(tune, "tune-worker", image=images.cpu, policy=policy, cache=False)
        if tuning_secret:
            from kfp import kubernetes

            kubernetes.use_secret_as_env(tune, secret_name=tuning_secret,
                                         secret_key_to_env={"password": TUNING_PASSWORD_ENV})
        if gpu is not None:  # build_pipeline(tune_on_gpu=True): trials train on GPU nodes too
            _on_gpu(tune, image=images.gpu, **gpu)
    best = select_best(
        storage_url=storage, study_name=study_name, train_config=train_config
    ).set_display_name("select best loss weights")
    best.after(tune)
    return _configure(best, "select-best", image=images.cpu, policy=policy, cache=False)


def _train_step(*, dataset: Any, model_config: Any, train_config: Any, loss_weights: Any,
                images: PipelineImages, policy: TaskPolicy, gpu: Mapping[str, Any]) -> Any:
    fit = train(
        dataset=dataset, model_config=model_config, train_config=train_config, loss_weights=loss_weights
    ).set_display_name("train (GPU)")
    _configure(fit, "train", image=images.gpu, policy=policy)
    return _on_gpu(fit, image=images.gpu, **gpu)


def _release_steps(*, model: Any, dataset: Any, eval_split: Any, min_emotion_accuracy: Any, serving_metrics_uri: Any,
                   deploy_model: Any, service: Mapping[str, Any], images: PipelineImages, policy: TaskPolicy) -> None:
    """evaluate -> gate -> deploy, the last only when asked for and the gate passes."""
    score = evaluate(model=model, dataset=dataset, split=eval_split).set_display_name("evaluate")
    _configure(score, "evaluate", image=images.cpu, policy=policy)
    decide = gate(
        candidate_metrics=score.outputs["metrics"],
        min_emotion_accuracy=min_emotion_accuracy,
        serving_metrics_uri=serving_metrics_uri,
    ).set_display_name("gate")
    # The serving model's metrics change between runs under the same URI: never cache.
    _configure(decide, "gate", image=images.cpu, policy=policy, cache=False)
    # `== True` builds a KFP condition expression; `is True` would be evaluated by Python now.
    with (
        dsl.If(deploy_model == True, name="deploy-requested"),  # noqa: E712
        dsl.If(decide.outputs["Output"] == True, name="gate-passed"),  # noqa: E712
    ):
        ship = deploy(model=model, image=images.predictor, **service).set_display_name("deploy (KServe)")
        _configure(ship, "deploy", image=images.cpu, policy=policy, cache=False)


def build_pipeline(
    *,
    images: PipelineImages | None = None,
    policy: TaskPolicy | None = None,
    tuning_secret: str | None = TUNING_SECRET,
    tune_on_gpu: bool = False,
) -> Any:
    """Build the fer-mtl pipeline (a KFP GraphComponent).

    Args:
        images: Container images per role (default: the pinned ones in components/_images.py).
        policy: Retries and resources per task.
        tuning_secret: Secret whose `password` key tune workers see as OPTUNA_DB_PASSWORD;
            None when `tuning_storage` needs no password.
        tune_on_gpu: Tuning trials run on GPU nodes too (the GPU image, one GPU each, the run's
            `gpu_node_selector` and `gpu_tolerations`); by default they run on CPU nodes.
    """
    images = images or PipelineImages()
    policy = policy or TaskPolicy()
    steps = {"images": images, "policy": policy}

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Multi-task facial emotion CNN (arXiv 2110.15028): prepare, tune loss weights, train on a "
        "GPU, evaluate, gate and deploy to KServe.",
    )
    def fer_pipeline(
        sources: str = "",
        sources_fingerprint: str = "",
        sample_n: int = 0,
        align_config: str = _default_json("align_config"),
        split_mode: str = "official",
        limit: int = 0,
        prepare_workers: int = 4,
        seed: int = 0,
        drop_training_copies: bool = False,
        near_copies: bool = False,
        model_config: str = _default_json("model_config"),
        train_config: str = _default_json("train_config"),
        tune_config: str = _default_json("tune_config"),
        teachers: str = "",
        teach_config: str = _default_json("teach_config"),
        tune_workers: int = 2,
        tuning_storage: str = "",
        eval_split: str = "test",
        min_emotion_accuracy: float = 0.6,
        serving_metrics_uri: str = "",
        deploy_model: bool = False,
        service_name: str = "fer-mtl",
        service_namespace: str = "kubeflow-user-example-com",
        canary_traffic_percent: int = 10,
        deploy_dry_run: bool = False,
        service_account: str = "",
        gpu_node_selector: dict = dict(GPU_NODE_SELECTOR),  # noqa: B006 (KFP reads the default)
        gpu_tolerations: list = [dict(t) for t in GPU_TOLERATIONS],  # noqa: B006 (KFP reads the default)
    ) -> None:
        """Parameters: `sources` comma-separated KIND:PATH (PATH local or gs://); `sources_fingerprint`
        what is there now (filled in by `fer-mtl pipeline run/submit`; it keys prepare's cache); `sample_n` > 0
        adds that many generated faces; `seed` seeds the data split; `drop_training_copies` leaves out training
        faces that copy validation or test faces, `near_copies` also finds near copies (the same photo
        re-cropped or re-lit; for photos, not drawn faces); `align_config` is a JSON object of
        AlignConfig fields (how prepare levels faces: `crop_eyes` "blazeface" is the fast one); `model_config`,
        `train_config` and `tune_config` are JSON objects of ModelConfig, TrainConfig and
        TuneConfig fields (the train and tune steps get the same model and training settings;
        `train_config`'s loss weights are used when no tuning trial completes); `tune_config`'s
        `n_trials` is study-wide, shared by `tune_workers` parallel workers through
        `tuning_storage` (postgresql:// URL on a cluster, a journal file locally); `teachers` a JSON
        object {task: model artifact URI} whose models label the faces lacking that task's label
        before tuning and training (`teach_config` a JSON object of TeachConfig fields; train with
        `train_config`'s distill_* settings), empty = no teacher; the model is
        deployed only when `deploy_model` is true and the gate passes; GPU steps run on nodes with
        the labels `gpu_node_selector` and tolerate `gpu_tolerations` (a list of Kubernetes
        tolerations)."""
        gpu = {"node_selector": gpu_node_selector, "tolerations": gpu_tolerations}
        prep = _prepare_step(
            sources=sources, fingerprint=sources_fingerprint, sample_n=sample_n, align_config=align_config,
            split_mode=split_mode, limit=limit, workers=prepare_workers, seed=seed,
            drop_training_copies=drop_training_copies, near_copies=near_copies, **steps,
        )
        taught = _teach_step(dataset=prep.outputs["dataset"], teachers=teachers, teach_config=teach_config, **steps)
        dataset = taught.outputs["taught"]
        best = _tune_steps(
            dataset=dataset, storage=tuning_storage, workers=tune_workers, tune_config=tune_config,
            model_config=model_config, train_config=train_config, tuning_secret=tuning_secret,
            gpu=gpu if tune_on_gpu else None, **steps,
        )
        fit = _train_step(
            dataset=dataset, model_config=model_config, train_config=train_config,
            loss_weights=best.outputs["Output"], gpu=gpu, **steps,
        )
        _release_steps(
            model=fit.outputs["model"], dataset=dataset, eval_split=eval_split,
            min_emotion_accuracy=min_emotion_accuracy, serving_metrics_uri=serving_metrics_uri,
            deploy_model=deploy_model, **steps,
            service={"name": service_name, "namespace": service_namespace,
                     "canary_traffic_percent": canary_traffic_percent, "dry_run": deploy_dry_run,
                     "service_account": service_account},
        )

    return fer_pipeline


#: The pipeline with the default images (what `kfp.compiler.Compiler().compile` is given).
fer_pipeline = build_pipeline()


def compile_pipeline(
    package_path: str,
    *,
    images: PipelineImages | None = None,
    tuning_secret: str | None = TUNING_SECRET,
    tune_on_gpu: bool = False,
) -> str:
    """Compile the pipeline to a KFP IR YAML file at `package_path` and return that path."""
    from kfp import compiler

    pipeline = build_pipeline(images=images, tuning_secret=tuning_secret, tune_on_gpu=tune_on_gpu)
    compiler.Compiler().compile(pipeline, package_path=package_path)
    logger.info("compiled pipeline %r to %s", PIPELINE_NAME, package_path)
    return package_path
