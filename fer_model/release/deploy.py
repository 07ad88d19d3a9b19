"""Deploy the model artifact as a KServe InferenceService: create, or patch with a canary; wait until Ready.

The predictor is our own image running `fer-mtl serve` (a custom container), so KServe's storage
initializer downloads the artifact named by the container's `STORAGE_URI` into `/mnt/models`.

First deployment: the service is created and receives all traffic. Later deployments: the existing
service is patched (JSON merge patch) with the new image / artifact and `canaryTrafficPercent`, so
KServe starts a new revision and sends only that share of traffic to it, the rest staying on the
last ready revision. On failure nothing is deleted or rolled back: KServe keeps the previous revision
serving, and the error quotes the condition's message so the cause is visible in the pipeline log.
Promote a canary by deploying again with `canary_traffic_percent=100`.

Readiness: the service counts as deployed once `status.observedGeneration` has caught up with the
generation our write produced and its `Ready` condition is `True` (a patched service still shows
`Ready` from the previous revision until the controller has seen the patch). A `Ready` condition
that is `False` for the current generation, or a model status of `BlockedByFailedLoad` /
`InvalidSpec`, is a failure.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fer_model.errors import ConfigError, FerError

if TYPE_CHECKING:
    from kubernetes.client import CustomObjectsApi

logger = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
API_VERSION = f"{GROUP}/{VERSION}"
#: Where KServe's storage initializer puts the artifact named by STORAGE_URI.
MODEL_MOUNT = "/mnt/models"
#: KServe recognises the predictor container by this name.
CONTAINER_NAME = "kserve-container"
#: Least privilege for the predictor: the image's unprivileged user (images/predictor/Dockerfile),
#: a read-only root filesystem, no capabilities, no privilege escalation, the runtime's seccomp profile.
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: The emptyDir mounted at /tmp, the only writable path (TensorFlow, Keras and kserve temp files).
TMP_SIZE_LIMIT = "256Mi"
SERVING_PORT = 8080

# KServe derives Knative and DNS names from the service name: a DNS-1035 label, with room for suffixes.
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,43}[a-z0-9])?$")
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY_RE = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_FAILED_MODEL_STATES = {"BlockedByFailedLoad", "InvalidSpec"}


class DeployError(FerError):
    """The InferenceService could not be created, patched, or did not become Ready in time."""


@dataclass(frozen=True)
class Resources:
    """Container requests and limits (Kubernetes quantities)."""

    cpu_request: str = "1"
    memory_request: str = "2Gi"
    cpu_limit: str = "2"
    memory_limit: str = "4Gi"

    def __post_init__(self) -> None:
        for name in ("cpu_request", "memory_request", "cpu_limit", "memory_limit"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _QUANTITY_RE.match(value):
                raise ConfigError(f"`{name}` must be a Kubernetes quantity such as '500m' or '2Gi', got {value!r}")

    def to_k8s(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


@dataclass(frozen=True)
class DeployConfig:
    """What to deploy and where.

    Attributes:
        name: InferenceService name; also the model name in request paths (`/v1/models/NAME:predict`).
        namespace: Kubernetes namespace.
        image: The predictor image (our serving image, pinned by tag or digest).
        storage_uri: The model artifact (gs://..., s3://..., pvc://...), mounted at /mnt/models.
        min_replicas / max_replicas: Autoscaling bounds; min 0 allows scale to zero (cold starts).
        canary_traffic_percent: Share of traffic the new revision gets when the service exists.
        resources: Container requests and limits.
        service_account_name: Service account of the predictor pod (e.g. with read access to the bucket).
        deployment_mode: KServe's deployment mode annotation; canaries need "Serverless" (Knative).
        server_args: Extra `fer-mtl serve` flags (e.g. `["--max-images", "8"]`).
    """

    image: str
    storage_uri: str
    name: str = "fer-mtl"
    namespace: str = "default"
    min_replicas: int = 1
    max_replicas: int = 3
    canary_traffic_percent: int = 10
    resources: Resources = field(default_factory=Resources)
    service_account_name: str | None = None
    deployment_mode: Literal["Serverless", "RawDeployment"] = "Serverless"
    server_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                "`name` must be a lowercase DNS label of at most 45 characters starting with a letter, "
                f"got {self.name!r}"
            )
        if not _NAMESPACE_RE.match(self.namespace):
            raise ConfigError(f"`namespace` must be a lowercase DNS label, got {self.namespace!r}")
        if not self.image or any(c.isspace() for c in self.image):
            raise ConfigError(f"`image` must be a container image reference, got {self.image!r}")
        if "://" not in self.storage_uri:
            raise ConfigError(
                f"`storage_uri` must be a URI KServe's storage initializer can fetch (gs://, s3://, pvc://, "
                f"https://), got {self.storage_uri!r}"
            )
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                f"got min_replicas={self.min_replicas}, max_replicas={self.max_replicas}"
            )
        if not 1 <= self.canary_traffic_percent <= 100:
            raise ConfigError(f"`canary_traffic_percent` must be in 1..100, got {self.canary_traffic_percent}")
        if self.deployment_mode not in ("Serverless", "RawDeployment"):
            raise ConfigError(
                f"`deployment_mode` must be 'Serverless' or 'RawDeployment', got {self.deployment_mode!r}"
            )
        if self.deployment_mode == "RawDeployment" and self.canary_traffic_percent != 100:
            raise ConfigError(
                "canary rollouts need deployment_mode='Serverless' (Knative revisions); "
                "with 'RawDeployment' pass canary_traffic_percent=100"
            )
        object.__setattr__(self, "server_args", tuple(str(a) for a in self.server_args))


@dataclass(frozen=True)
class DeployResult:
    """Outcome of `deploy`: what was done and where the service answers."""

    name: str
    namespace: str
    action: Literal["created", "patched"]
    url: str | None
    canary_traffic_percent: int | None
    status: dict[str, Any]

    def __post_init__(self) -> None:
        if self.action not in ("created", "patched"):
            raise ConfigError(f"`action` must be 'created' or 'patched', got {self.action!r}")


#: KServe's Prometheus scraping: the pod gets prometheus.io/* annotations for our /metrics on the
#: serving port (kserve's request histograms and our fer_* counters).
PROMETHEUS_ANNOTATIONS = {
    "serving.kserve.io/enable-prometheus-scraping": "true",
    "prometheus.kserve.io/port": str(SERVING_PORT),
    "prometheus.kserve.io/path": "/metrics",
}


def probes(name: str) -> dict[str, dict[str, Any]]:
    """Startup, liveness and readiness probes of the predictor container.

    The server listens only once the model is loaded (TensorFlow import + warm-up, a minute or more
    on a small node), so the startup probe allows 5 minutes before liveness takes over; liveness asks
    the process whether it answers at all, readiness whether the model is ready.
    """
    live = {"httpGet": {"path": "/v2/health/live", "port": SERVING_PORT}}
    return {
        "startupProbe": {**live, "periodSeconds": 5, "failureThreshold": 60},
        "livenessProbe": {**live, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{name}/ready", "port": SERVING_PORT},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
    }


def build_inferenceservice(config: DeployConfig) -> dict[str, Any]:
    """The InferenceService manifest (a dict) for our custom predictor, without canary traffic."""
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        # command, not just args: independent of the image's ENTRYPOINT. Binding 0.0.0.0 is right
        # inside the pod (the CLI's default is loopback for local use).
        "command": ["fer-mtl", "serve"],
        "args": [
            "--model",
            MODEL_MOUNT,
            "--name",
            config.name,
            "--host",
            "0.0.0.0",
            "--port",
            str(SERVING_PORT),
            # The try-it page stays off on a cluster; `server_args=["--page"]` turns it on (last flag wins).
            "--no-page",
            *config.server_args,
        ],
        "env": [{"name": "STORAGE_URI", "value": config.storage_uri}],
        "ports": [{"containerPort": SERVING_PORT, "protocol": "TCP"}],
        **probes(config.name),
        "resources": config.resources.to_k8s(),
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    predictor: dict[str, Any] = {
        "minReplicas": config.min_replicas,
        "maxReplicas": config.max_replicas,
        "containers": [container],
        # The server's only scratch space: the root filesystem is read-only.
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
    }
    if config.service_account_name:
        predictor["serviceAccountName"] = config.service_account_name
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": config.name,
            "namespace": config.namespace,
            "labels": {"app.kubernetes.io/name": "fer-mtl", "app.kubernetes.io/component": "predictor"},
            "annotations": {"serving.kserve.io/deploymentMode": config.deployment_mode, **PROMETHEUS_ANNOTATIONS},
        },
        "spec": {"predictor": predictor},
    }


def canary_patch(config: DeployConfig) -> dict[str, Any]:
    """The merge patch that rolls an existing service onto this config with a canary share of traffic."""
    manifest = build_inferenceservice(config)
    predictor = copy.deepcopy(manifest["spec"]["predictor"])
    predictor["canaryTrafficPercent"] = config.canary_traffic_percent
    return {"metadata": {"labels": manifest["metadata"]["labels"]}, "spec": {"predictor": predictor}}


def default_api() -> CustomObjectsApi:
    """A CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError) as e:
            raise DeployError(
                f"no Kubernetes credentials: not in a cluster and no usable kubeconfig ({e}); "
                "run inside the cluster or set KUBECONFIG"
            ) from e
    return client.CustomObjectsApi()


def deploy(
    *,
    config: DeployConfig,
    api: CustomObjectsApi | None = None,
    timeout_s: float = 600.0,
    poll_interval_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Create the InferenceService, or patch the existing one with a canary, and wait until Ready.

    Args:
        config: What to deploy.
        api: A kubernetes `CustomObjectsApi`; None builds one from in-cluster config or kubeconfig.
        timeout_s: How long to wait for `Ready`.
        poll_interval_s: Seconds between status reads.
        clock, sleep: Injected for tests.

    Returns:
        DeployResult with the URL KServe reports.

    Raises:
        DeployError: the API refused the write, the service reported a failure (message quoted),
            or it was not Ready within `timeout_s`. The previous revision is left serving.
    """
    if timeout_s <= 0 or poll_interval_s <= 0:
        raise ConfigError(f"`timeout_s` and `poll_interval_s` must be > 0, got {timeout_s}, {poll_interval_s}")
    api = api or default_api()
    written, action, canary = _create_or_patch(api, config)
    status = wait_ready(
        api=api,
        name=config.name,
        namespace=config.namespace,
        generation=written.get("metadata", {}).get("generation"),
        timeout_s=timeout_s,
        poll_interval_s=poll_interval_s,
        clock=clock,
        sleep=sleep,
    )
    url = status.get("url")
    logger.info("InferenceService %s/%s is Ready at %s", config.namespace, config.name, url)
    return DeployResult(
        name=config.name,
        namespace=config.namespace,
        action=action,
        url=url,
        canary_traffic_percent=canary,
        status=status,
    )


def _create_or_patch(
    api: CustomObjectsApi, config: DeployConfig
) -> tuple[dict[str, Any], Literal["created", "patched"], int | None]:
    """Create the service, or patch the existing one so its new revision gets the canary share.

    Returns:
        (the object the API wrote, what was done, the new revision's traffic percent or None for all).
    """
    if _get(api, config) is None:
        written = _call(
            "create",
            config,
            lambda: api.create_namespaced_custom_object(
                GROUP, VERSION, config.namespace, PLURAL, build_inferenceservice(config)
            ),
        )
        logger.info("created InferenceService %s/%s", config.namespace, config.name)
        return written, "created", None
    written = _call(
        "patch",
        config,
        lambda: api.patch_namespaced_custom_object(
            GROUP, VERSION, config.namespace, PLURAL, config.name, canary_patch(config)
        ),
    )
    logger.info(
        "patched InferenceService %s/%s: new revision gets %d%% of traffic",
        config.namespace,
        config.name,
        config.canary_traffic_percent,
    )
    return written, "patched", config.canary_traffic_percent


def wait_ready(
    *,
    api: CustomObjectsApi,
    name: str,
    namespace: str,
    generation: int | None,
    timeout_s: float,
    poll_interval_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the service until it is Ready for `generation`; returns its status.

    Raises:
        DeployError: a failure condition (quoted), or not Ready within `timeout_s`.
    """
    deadline = clock() + timeout_s
    last = "no status yet"
    while True:
        obj = _call_raw(
            "read", name, namespace, lambda: api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )
        status = obj.get("status") or {}
        observed = status.get("observedGeneration")
        current = generation is None or (observed is not None and observed >= generation)
        ready = _condition(status, "Ready")
        if current:
            failure = _failure(status)
            if failure:
                raise DeployError(
                    f"InferenceService {namespace}/{name} failed: {failure}; "
                    "the previous revision, if any, keeps serving"
                )
            if ready and ready.get("status") == "True":
                return status
        last = _describe(ready, observed=observed, generation=generation)
        if clock() >= deadline:
            raise DeployError(
                f"InferenceService {namespace}/{name} was not Ready after {timeout_s:g}s ({last}); "
                "the previous revision, if any, keeps serving; check `kubectl describe inferenceservice "
                f"{name} -n {namespace}`"
            )
        sleep(min(poll_interval_s, max(0.0, deadline - clock())))


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def _failure(status: dict[str, Any]) -> str | None:
    """A message when the status says the rollout failed (not merely in progress)."""
    ready = _condition(status, "Ready")
    if ready and ready.get("status") == "False":
        reason = ready.get("reason") or "no reason given"
        return f"condition Ready is False ({reason}): {ready.get('message') or 'no message'}"
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in _FAILED_MODEL_STATES:
        info = model.get("lastFailureInfo") or {}
        return f"model status {model['transitionStatus']}: {info.get('message') or info.get('reason') or 'no message'}"
    return None


def _describe(ready: dict[str, Any] | None, *, observed: Any, generation: int | None) -> str:
    if ready is None:
        where = "no Ready condition"
    else:
        where = f"Ready={ready.get('status')}"
        if ready.get("message"):
            where += f": {ready['message']}"
    if generation is not None and (observed is None or observed < generation):
        where += f"; controller has seen generation {observed}, waiting for {generation}"
    return where


def _get(api: CustomObjectsApi, config: DeployConfig) -> dict[str, Any] | None:
    """The existing service, or None when there is none (404)."""
    from kubernetes.client.exceptions import ApiException

    def read() -> dict[str, Any] | None:
        try:
            return api.get_namespaced_custom_object(GROUP, VERSION, config.namespace, PLURAL, config.name)
        except ApiException as e:
            if e.status == 404 and _is_missing_object(e):
                return None
            raise

    return _call("read", config, read)


def _is_missing_object(e: Any) -> bool:
    """A 404 for the object itself, not for the whole API (CRD not installed, no such namespace)."""
    import json

    try:
        details = json.loads(e.body).get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return False
    return details.get("kind") == PLURAL


def _call(verb: str, config: DeployConfig, fn: Callable[[], Any]) -> dict[str, Any]:
    return _call_raw(verb, config.name, config.namespace, fn)


def _call_raw(verb: str, name: str, namespace: str, fn: Callable[[], Any]) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        return fn()
    except ApiException as e:
        raise _api_error(verb, name, namespace, e) from e
    except HTTPError as e:
        raise DeployError(f"cannot reach the Kubernetes API to {verb} InferenceService {namespace}/{name}: {e}") from e


def _api_error(verb: str, name: str, namespace: str, e: Any) -> DeployError:
    import json

    message = e.reason
    with contextlib.suppress(TypeError, ValueError, AttributeError):  # a body that is no k8s Status
        message = json.loads(e.body).get("message") or message
    hint = ""
    if e.status == 403:
        hint = "; the service account needs the fer-mtl-deployer Role (manifests/base/deploy-rbac.yaml)"
    elif e.status == 404:
        hint = "; is KServe installed (InferenceService CRD) and does the namespace exist?"
    return DeployError(f"cannot {verb} InferenceService {namespace}/{name}: HTTP {e.status}: {message}{hint}")
