"""Compile, run locally, or submit the fer-mtl pipeline (what `fer-mtl pipeline` and `fer-mtl demo` call).

Local runs use `kfp.local.SubprocessRunner(use_venv=False)`: every task runs as a subprocess of
this Python environment, artifacts land under `<out>/pipeline-root/<run>/<task>/<output>`. With
`runner="docker"`, `kfp.local.DockerRunner` runs every task in its image instead (`make images`),
with the same `executor_main` command a cluster's launcher runs.
Cluster runs go through `kfp.Client`; the host is probed first with a short timeout, because the
client itself retries an unreachable host for half a minute before it says anything.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fer_model._settings import parse_json_object
from fer_model.artifact_files import METRICS_FILE, EvaluationMetrics
from fer_model.errors import ConfigError, FerError, StorageError
from pipelines.kfp_auth import TOKEN_ENV, KfpCredentials

logger = logging.getLogger(__name__)

#: Seconds to wait for the KFP API host to answer before giving up.
PROBE_TIMEOUT_S = 5.0
_EXECUTOR_OUTPUT = "executor_output.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PipelineError(FerError):
    """A pipeline run failed, or the Kubeflow Pipelines API cannot be reached or refused a request."""


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its outputs.

    Attributes:
        run_dir: `<pipeline_root>/<pipeline-name>-<timestamp>`.
        tasks: Task path relative to `run_dir` (e.g. "train", "for-loop-1-iteration-0/tune-worker")
            -> {output name: local path} for every artifact the task wrote.
        report: The evaluation report (one HTML file, images inlined), when the evaluate task ran.
        metrics: metrics.json of the evaluate task, when it ran.
    """

    run_dir: Path
    tasks: dict[str, dict[str, Path]] = field(default_factory=dict)
    report: Path | None = None
    metrics: EvaluationMetrics | None = None

    def __post_init__(self) -> None:
        if not Path(self.run_dir).is_dir():
            raise PipelineError(f"run folder {self.run_dir} does not exist")


def pipeline_inputs() -> dict[str, tuple[str, Any]]:
    """The pipeline's parameters: name -> (KFP type name, default)."""
    from pipelines.fer_pipeline import fer_pipeline

    return {name: (spec.type, spec.default) for name, spec in fer_pipeline.component_spec.inputs.items()}


def coerce_params(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check parameter names against the pipeline and convert text values to their declared types.

    A step's JSON settings can also be set one field at a time: `train_config.epochs=3` is laid over
    `train_config` (the value given, else the pipeline's default). Values are read as JSON where they
    parse (3, 0.5, true, [..]) and as text otherwise; every step config is validated here.

    Raises:
        ConfigError: an unknown name, or a value that is not of the parameter's type.
    """
    from pipelines.fer_pipeline import STEP_CONFIGS, step_config_json

    inputs = pipeline_inputs()
    out: dict[str, Any] = {}
    fields: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        section, dot, key = name.partition(".")
        if dot and section in STEP_CONFIGS:
            fields.setdefault(section, {})[key] = _json_value(value)
        elif name not in inputs:
            raise ConfigError(
                f"unknown pipeline parameter {name!r}; expected one of {sorted(inputs)}, or a field of a step's "
                f"settings such as train_config.epochs"
            )
        else:
            out[name] = _coerce(name, inputs[name][0], value)
    for section in STEP_CONFIGS:
        if section in out or section in fields:
            base = parse_json_object(out.get(section, inputs[section][1]), name=section)
            out[section] = step_config_json(section, {**base, **fields.get(section, {})})
    return out


def with_fingerprint(args: Mapping[str, Any]) -> dict[str, Any]:
    """`args` with `sources_fingerprint` computed from what is at `sources` now, unless given.

    Prepare is cached on its inputs: the fingerprint makes new data at the same locations a new
    cache key (fer_model.source_fingerprint; gs:// is listed, not downloaded).
    """
    from fer_model.source_fingerprint import fingerprint_sources

    out = dict(args)
    if not out.get("sources_fingerprint"):
        out["sources_fingerprint"] = fingerprint_sources(str(out.get("sources", "")))
    return out


def _json_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _coerce(name: str, kind: str, value: Any) -> Any:
    if not isinstance(value, str):
        ok = {
            "Integer": isinstance(value, int) and not isinstance(value, bool),
            "Float": isinstance(value, int | float) and not isinstance(value, bool),
            "Boolean": isinstance(value, bool),
            "String": False,
        }.get(kind, True)
        if ok:
            return float(value) if kind == "Float" else value
        raise ConfigError(f"pipeline parameter `{name}` must be {kind}, got {value!r}")
    try:
        if kind == "Integer":
            return int(value)
        if kind == "Float":
            return float(value)
        if kind == "Boolean":
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError(value)
    except ValueError:
        raise ConfigError(f"pipeline parameter `{name}` must be {kind}, got {value!r}") from None
    return value


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """`["train_config.epochs=3", "sources=a,b"]` -> {"train_config.epochs": "3", "sources": "a,b"}.

    Only the first "=" splits, so values may hold "=".
    """
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"parameter {item!r} must look like NAME=VALUE")
        out[name.strip().replace("-", "_")] = value
    return out


def compile_to(
    path: str | os.PathLike[str],
    *,
    images: Any = None,
    tuning_secret: str | None = "fer-mtl-tuning-postgres",
    tune_on_gpu: bool = False,
) -> tuple[Path, float]:
    """Compile the pipeline (with `images`, a `PipelineImages`) to `path`; returns (path, seconds)."""
    from pipelines.fer_pipeline import compile_pipeline

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        compile_pipeline(str(target), images=images, tuning_secret=tuning_secret, tune_on_gpu=tune_on_gpu)
    except OSError as e:
        raise StorageError(f"cannot write the compiled pipeline to {target}: {e.strerror or e}") from e
    return target, time.perf_counter() - start


#: `runner` values of `run_local`.
RUNNERS = ("subprocess", "docker")


def run_local(
    params: Mapping[str, Any],
    *,
    out_dir: str | os.PathLike[str],
    runner: str = "subprocess",
    images: Any = None,
) -> LocalRun:
    """Run the whole pipeline on this machine, each task as a subprocess or in its container image.

    `tuning_storage` defaults to a journal file under `out_dir` (the pipeline root for `docker`,
    the one folder every container mounts), shared by the local workers. `images` (a
    `PipelineImages`) picks the images the `docker` runner uses.

    Raises:
        ConfigError: bad parameters or an unknown runner.
        PipelineError: a task failed (its log is printed above by kfp.local).
    """
    from kfp import local

    from pipelines.fer_pipeline import TaskPolicy, build_pipeline

    if runner not in RUNNERS:
        raise ConfigError(f"unknown local runner {runner!r}; expected one of {list(RUNNERS)}")
    # Locally a failure is deterministic (no pre-emption, no flaky registry): retrying only delays it.
    pipeline = build_pipeline(policy=TaskPolicy(retries=0), images=images)
    out = Path(out_dir).resolve()
    root = out / "pipeline-root"
    root.mkdir(parents=True, exist_ok=True)
    args = with_fingerprint(coerce_params(params))
    args.setdefault("tuning_storage", str((root if runner == "docker" else out) / "optuna-journal.log"))
    before = set(root.iterdir())
    local.init(runner=_local_runner(runner), pipeline_root=str(root))
    logger.info("running pipeline locally under %s with %s", root, args)
    try:
        with warnings.catch_warnings():
            # kfp.local warns for every task whose image name lacks "python"; ours are Python images.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
            # Resources, accelerators and retries are cluster settings; locally they are moot.
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            pipeline(**args)
    except RuntimeError as e:
        # kfp.local raises RuntimeError("Pipeline ... finished with status FAILURE ...") after the
        # failing task's log has been streamed; keep its first line, without terminal colours.
        text = _ANSI.sub("", str(e)).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise PipelineError(f"local pipeline run failed: {first} (task logs above; outputs under {root})") from e
    new = sorted(set(root.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise PipelineError(f"the local run left no run folder under {root}")
    return collect_outputs(new[-1])


def _local_runner(runner: str) -> Any:
    """The kfp.local runner object for `runner`."""
    from kfp import local

    if runner == "subprocess":
        return local.SubprocessRunner(use_venv=False)
    try:
        # Host networking: containers get no address of their own (and daemons started with
        # --bridge=none have no other network). Running as the caller's uid keeps what the tasks
        # write into the mounted pipeline root owned by, and readable to, the caller.
        return local.DockerRunner(network_mode="host", user=f"{os.getuid()}:{os.getgid()}")
    except ImportError as e:
        raise ConfigError(
            "the docker runner needs the `docker` Python package: pip install 'fer-mtl[pipeline]'"
        ) from e


def collect_outputs(run_dir: Path) -> LocalRun:
    """Index a finished local run folder: each task's artifacts, the report and the metrics."""
    tasks: dict[str, dict[str, Path]] = {}
    for marker in sorted(run_dir.rglob(_EXECUTOR_OUTPUT)):
        task_dir = marker.parent
        outputs = {p.name: p for p in sorted(task_dir.iterdir()) if p.name != _EXECUTOR_OUTPUT}
        tasks[task_dir.relative_to(run_dir).as_posix()] = outputs
    evaluate = tasks.get("evaluate", {})
    report = evaluate.get("report")
    metrics_file = evaluate.get("metrics", Path("/nonexistent")) / METRICS_FILE
    metrics = EvaluationMetrics.read(metrics_file) if metrics_file.is_file() else None
    return LocalRun(run_dir=run_dir, tasks=tasks, report=report, metrics=metrics)


def probe_host(host: str, *, credentials: KfpCredentials | None = None, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast, with one clear line, when the KFP API at `host` does not answer or refuses `credentials`.

    The probe sends the credentials a run would send, so a missing, wrong or expired one is named
    here, in one line, before `kfp.Client` retries its own health check for half a minute.
    """
    if not host.startswith(("http://", "https://")):
        raise ConfigError(f"--host must be an http(s) URL like http://localhost:8080, got {host!r}")
    credentials = credentials or KfpCredentials()
    request = urllib.request.Request(host.rstrip("/") + "/apis/v2beta1/healthz", headers=credentials.headers())
    # Not following redirects: an auth proxy sends an unauthenticated client to its login page.
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403) or 300 <= e.code < 400:
            answer = f"redirected to {e.headers.get('Location', 'a login page')}" if e.code < 400 else f"HTTP {e.code}"
            sent = credentials.describe()
            problem = "asks for credentials" if sent == "no credentials" else f"refused {sent} (wrong or expired?)"
            raise PipelineError(
                f"Kubeflow Pipelines at {host} {problem}: {answer}; pass a valid --token (or ${TOKEN_ENV}), "
                "--sa-token inside the cluster, or --cookie authservice_session=... (see README: Run on Kubeflow)"
            ) from None
        return  # any other answer means the host is there; the API call itself will say more
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PipelineError(
            f"cannot reach Kubeflow Pipelines at {host} ({reason}); check --host, e.g. "
            "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` then --host http://localhost:8080"
        ) from e


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def submit(
    *,
    host: str,
    package: str | os.PathLike[str],
    params: Mapping[str, Any],
    experiment: str = "fer-mtl",
    run_name: str | None = None,
    namespace: str | None = None,
    service_account: str | None = None,
    enable_caching: bool | None = None,
    credentials: KfpCredentials | None = None,
) -> str:
    """Submit a compiled pipeline to a Kubeflow Pipelines cluster; returns the run id.

    `credentials` (a bearer token, a service-account token file, a session cookie) go to
    `kfp.Client`; without them the API is called unauthenticated (a single-user install).

    Raises:
        ConfigError: bad parameters, or no `tuning_storage` (a cluster needs a shared database).
        PipelineError: the host does not answer, or the API refuses the run.
    """
    args = coerce_params(params)
    if not str(args.get("tuning_storage", "")).strip():
        raise ConfigError(
            "pipeline parameter `tuning_storage` is required on a cluster: pass "
            "-p tuning_storage=postgresql://USER:${OPTUNA_DB_PASSWORD}@HOST:5432/DB (see README: Run on Kubeflow)"
        )
    _refuse_inline_password(str(args["tuning_storage"]))
    credentials = credentials or KfpCredentials()
    probe_host(host, credentials=credentials)
    args = with_fingerprint(args)
    import kfp
    from kfp_server_api.exceptions import ApiException

    try:
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", **credentials.client_kwargs())
        result = client.create_run_from_pipeline_package(
            str(package),
            arguments=args,
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            service_account=service_account or None,
            enable_caching=enable_caching,
        )
    except ApiException as e:
        denied = e.status in (401, 403)
        hint = f" with {credentials.describe()}; check the credentials and --namespace" if denied else ""
        raise PipelineError(
            f"Kubeflow Pipelines at {host} refused the run: HTTP {e.status} {e.reason}{hint}"
        ) from None
    except (OSError, TimeoutError) as e:
        raise PipelineError(f"submitting to {host} failed: {type(e).__name__}: {e}") from e
    logger.info("submitted run %s to %s", result.run_id, host)
    return str(result.run_id)


#: A URL password that is a reference such as ${OPTUNA_DB_PASSWORD}, expanded in the pod from a Secret.
_PASSWORD_REFERENCE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")


def _refuse_inline_password(storage: str) -> None:
    """Refuse a `tuning_storage` URL that holds a literal password: run parameters are readable by
    everyone who can see the run (the KFP UI, the API), so a password there is a leaked password."""
    match = re.search(r"://[^:/@]+:([^@]*)@", storage)
    if match and match.group(1) and not _PASSWORD_REFERENCE.fullmatch(match.group(1)):
        raise ConfigError(
            "pipeline parameter `tuning_storage` holds a literal password, which every viewer of the run "
            "would see; write postgresql://USER:${OPTUNA_DB_PASSWORD}@HOST:5432/DB, the password coming "
            "from the --tuning-secret Secret"
        )
