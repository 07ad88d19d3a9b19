"""Deploy: the InferenceService spec, and create / canary patch / wait against a fake Kubernetes API.

The fake API is an http.server on 127.0.0.1 speaking the custom-objects paths the kubernetes client
uses; the real `kubernetes.client.CustomObjectsApi` talks to it, so URL paths, verbs, content types
and bodies are the ones a cluster would see.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fer_model.errors import ConfigError
from fer_model.release.deploy import (
    DeployConfig,
    DeployError,
    Resources,
    build_inferenceservice,
    canary_patch,
    deploy,
)

NS = "kubeflow-user"
PREFIX = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
URL = f"http://fer-mtl.{NS}.example.com"


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


# A status policy gets (stored object, number of GETs since the last write) and returns its status.
StatusPolicy = Callable[[dict, int], dict]


def ready_after(polls: int) -> StatusPolicy:
    """Ready for the current generation once `polls` reads have happened; stale before that."""

    def policy(obj: dict, reads: int) -> dict:
        generation = obj["metadata"]["generation"]
        if reads >= polls:
            cond = {"type": "Ready", "status": "True"}
            return {"observedGeneration": generation, "url": URL, "conditions": [cond]}
        # The controller has not caught up: status still describes the previous generation.
        previous = obj.get("_previous_status") or {"conditions": [{"type": "Ready", "status": "Unknown"}]}
        return {**previous, "observedGeneration": generation - 1}

    return policy


def never_ready(obj: dict, reads: int) -> dict:
    cond = {"type": "Ready", "status": "Unknown", "reason": "RevisionMissing", "message": "still creating"}
    return {"observedGeneration": obj["metadata"]["generation"], "conditions": [cond]}


def failed(obj: dict, reads: int) -> dict:
    cond = {
        "type": "Ready",
        "status": "False",
        "reason": "RevisionFailed",
        "message": 'Revision "fer-mtl-predictor-00002" failed with message: Back-off pulling image "bad:tag".',
    }
    return {"observedGeneration": obj["metadata"]["generation"], "conditions": [cond]}


def failed_model_load(obj: dict, reads: int) -> dict:
    return {
        "observedGeneration": obj["metadata"]["generation"],
        "conditions": [{"type": "Ready", "status": "Unknown"}],
        "modelStatus": {
            "transitionStatus": "BlockedByFailedLoad",
            "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no model.keras in /mnt/models"},
        },
    }


@dataclass
class FakeKube:
    """State and request log of the fake API server."""

    policy: StatusPolicy
    objects: dict[str, dict] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None, Any]] = field(default_factory=list)
    reads: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, path: str, content_type: str | None, body: Any) -> tuple[int, dict]:
        with self.lock:
            self.requests.append((method, path, content_type, body))
            if not path.startswith(PREFIX):
                return 404, {"kind": "Status", "message": f"the server could not find {path}", "code": 404}
            name = path[len(PREFIX) :].strip("/")
            if method == "POST" and not name:
                name = body["metadata"]["name"]
                if name in self.objects:
                    return 409, {"kind": "Status", "message": "already exists", "code": 409}
                obj = copy.deepcopy(body)
                obj["metadata"]["generation"] = 1
                self.objects[name] = obj
                self.reads = 0
                return 201, obj
            if name not in self.objects:
                # What a real API server answers for a missing object (details name its kind).
                return 404, {
                    "kind": "Status",
                    "reason": "NotFound",
                    "message": f'inferenceservices.serving.kserve.io "{name}" not found',
                    "details": {"name": name, "group": "serving.kserve.io", "kind": "inferenceservices"},
                    "code": 404,
                }
            obj = self.objects[name]
            if method == "GET":
                self.reads += 1
                return 200, {**obj, "status": self.policy(obj, self.reads)}
            if method == "PATCH":
                previous_status = self.policy(obj, 10**6)
                patched = _merge_patch(obj, body)
                patched["metadata"]["generation"] = obj["metadata"]["generation"] + 1
                patched["_previous_status"] = previous_status
                self.objects[name] = patched
                self.reads = 0
                return 200, patched
            return 405, {"kind": "Status", "message": f"{method} not allowed", "code": 405}


@pytest.fixture
def fake_kube() -> Iterator[tuple[FakeKube, Any]]:
    from kubernetes import client

    kube = FakeKube(policy=ready_after(3))

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            code, payload = kube.handle(self.command, self.path.split("?")[0], self.headers.get("Content-Type"), body)
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    api_client = client.ApiClient(configuration)
    try:
        yield kube, client.CustomObjectsApi(api_client)
    finally:
        api_client.close()
        server.shutdown()
        server.server_close()


def _config(**overrides: Any) -> DeployConfig:
    values: dict[str, Any] = {
        "image": "europe-docker.pkg.dev/proj/fer/fer-mtl-predictor:0.1.0",
        "storage_uri": "gs://fer-models/run-42/model",
        "namespace": NS,
        "canary_traffic_percent": 20,
    }
    values.update(overrides)
    return DeployConfig(**values)


class FakeClock:
    """Monotonic time that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _deploy(api: Any, config: DeployConfig, *, timeout_s: float = 60.0) -> Any:
    clock = FakeClock()
    return deploy(config=config, api=api, timeout_s=timeout_s, poll_interval_s=5.0, clock=clock, sleep=clock.sleep)


def test_first_deploy_creates_and_waits_for_ready(fake_kube: tuple[FakeKube, Any]) -> None:
    kube, api = fake_kube
    result = _deploy(api, _config())
    assert result.action == "created"
    assert result.url == URL
    assert result.canary_traffic_percent is None
    verbs = [(m, p) for m, p, _, _ in kube.requests]
    assert verbs[0] == ("GET", f"{PREFIX}/fer-mtl")  # does it exist? (404)
    assert verbs[1] == ("POST", PREFIX)
    assert verbs[2:] == [("GET", f"{PREFIX}/fer-mtl")] * 3  # polled until Ready
    created = kube.requests[1][3]
    assert created == build_inferenceservice(_config())
    assert "canaryTrafficPercent" not in created["spec"]["predictor"]


def test_existing_service_gets_a_canary_patch(fake_kube: tuple[FakeKube, Any]) -> None:
    kube, api = fake_kube
    _deploy(api, _config())
    kube.requests.clear()
    new = _config(
        image="europe-docker.pkg.dev/proj/fer/fer-mtl-predictor:0.2.0", storage_uri="gs://fer-models/run-43/model"
    )
    result = _deploy(api, new)
    assert result.action == "patched"
    assert result.canary_traffic_percent == 20
    patches = [(ct, body) for m, _, ct, body in kube.requests if m == "PATCH"]
    assert len(patches) == 1
    content_type, body = patches[0]
    assert content_type == "application/merge-patch+json"
    predictor = body["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 20
    container = predictor["containers"][0]
    assert container["image"].endswith(":0.2.0")
    assert {"name": "STORAGE_URI", "value": "gs://fer-models/run-43/model"} in container["env"]
    # The stale status (previous generation, still Ready) must not count: three reads were needed.
    gets_after_patch = [m for m, *_ in kube.requests if m == "GET"]
    assert len(gets_after_patch) == 1 + 3
    assert result.status["observedGeneration"] == 2
    # Nothing was deleted: the stored service is the patched one.
    assert kube.objects["fer-mtl"]["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert not any(m == "DELETE" for m, *_ in kube.requests)


def test_never_ready_times_out_with_a_clear_error(fake_kube: tuple[FakeKube, Any]) -> None:
    kube, api = fake_kube
    kube.policy = never_ready
    with pytest.raises(DeployError, match=r"not Ready after 30s \(Ready=Unknown: still creating\)"):
        _deploy(api, _config(), timeout_s=30.0)
    gets = [m for m, *_ in kube.requests if m == "GET"]
    assert 6 <= len(gets) <= 8  # polled every 5 s of (fake) time for 30 s, then gave up


@pytest.mark.parametrize(
    ("policy", "quoted"),
    [
        (failed, 'Back-off pulling image "bad:tag"'),
        (failed_model_load, "BlockedByFailedLoad: no model.keras in /mnt/models"),
    ],
)
def test_failed_condition_is_quoted_and_nothing_rolled_back(
    fake_kube: tuple[FakeKube, Any], policy: StatusPolicy, quoted: str
) -> None:
    kube, api = fake_kube
    _deploy(api, _config())
    kube.policy = policy
    kube.requests.clear()
    with pytest.raises(DeployError, match=re_escape(quoted)) as info:
        _deploy(api, _config(image="bad:tag"))
    assert "previous revision" in str(info.value)
    assert {m for m, *_ in kube.requests} == {"GET", "PATCH"}


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_api_refusal_names_the_status_and_hint(fake_kube: tuple[FakeKube, Any]) -> None:
    _, api = fake_kube
    with pytest.raises(DeployError, match="HTTP 404.*is KServe installed"):
        _deploy(api, _config(namespace="other-ns"))


def test_unreachable_api_is_a_deploy_error() -> None:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
    configuration.retries = 0
    with client.ApiClient(configuration) as api_client, pytest.raises(DeployError, match="fer-mtl"):
        _deploy(client.CustomObjectsApi(api_client), _config())


def test_spec_runs_our_server_on_the_mounted_artifact() -> None:
    spec = build_inferenceservice(_config(min_replicas=0, max_replicas=5, server_args=("--max-images", "4")))
    assert spec["apiVersion"] == "serving.kserve.io/v1beta1"
    assert spec["metadata"] == {
        "name": "fer-mtl",
        "namespace": NS,
        "labels": {"app.kubernetes.io/name": "fer-mtl", "app.kubernetes.io/component": "predictor"},
        "annotations": {
            "serving.kserve.io/deploymentMode": "Serverless",
            # KServe's Prometheus scraping of our /metrics on the serving port.
            "serving.kserve.io/enable-prometheus-scraping": "true",
            "prometheus.kserve.io/port": "8080",
            "prometheus.kserve.io/path": "/metrics",
        },
    }
    predictor = spec["spec"]["predictor"]
    assert "serviceAccountName" not in predictor  # the namespace's default unless asked for
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (0, 5)
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] + container["args"] == [
        "fer-mtl", "serve", "--model", "/mnt/models", "--name", "fer-mtl",
        "--host", "0.0.0.0", "--port", "8080", "--no-page", "--max-images", "4",
    ]  # fmt: skip
    assert container["resources"] == Resources().to_k8s()
    # Liveness asks whether the process answers; readiness whether the model is loaded; the startup
    # probe holds liveness off while the model loads.
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8080}
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 300
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/models/fer-mtl/ready", "port": 8080}
    assert canary_patch(_config())["spec"]["predictor"]["canaryTrafficPercent"] == 20


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"name": "Fer_MTL"}, "`name` must be a lowercase DNS label"),
        ({"namespace": "Bad NS"}, "`namespace`"),
        ({"storage_uri": "/local/model"}, "`storage_uri` must be a URI"),
        ({"image": "has space"}, "`image`"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas <= max_replicas"),
        ({"canary_traffic_percent": 0}, "canary_traffic_percent"),
        ({"deployment_mode": "RawDeployment"}, "canary rollouts need deployment_mode='Serverless'"),
        ({"resources": None}, None),
    ],
)
def test_bad_config_is_refused(overrides: dict, match: str | None) -> None:
    if match is None:
        with pytest.raises(ConfigError, match="cpu_limit"):
            Resources(cpu_limit="two")
        return
    with pytest.raises(ConfigError, match=match):
        _config(**overrides)


def test_deploy_component_calls_through(fake_kube: tuple[FakeKube, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from kfp.dsl import Artifact, Model

    import fer_model.release.deploy as deploy_module
    from components.deploy import deploy as deploy_component

    kube, api = fake_kube
    monkeypatch.setattr(deploy_module, "default_api", lambda: api)
    model = Model(uri="gs://fer-models/run-44/model")
    result = Artifact(uri="unused")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        result.path = str(Path(tmp) / "deployment.json")
        url = deploy_component.python_func(
            model=model,
            deployment=result,
            name="fer-mtl",
            namespace=NS,
            image="europe-docker.pkg.dev/proj/fer/fer-mtl-predictor:0.3.0",
            canary_traffic_percent=25,
            min_replicas=1,
            max_replicas=2,
            service_account="fer-mtl-predictor",
            timeout_s=600.0,
            poll_interval_s=0.01,
        )
        written = json.loads(Path(result.path).read_text())
    assert url == URL
    assert written["action"] == "created"
    assert written["url"] == URL
    created = kube.objects["fer-mtl"]
    assert created["spec"]["predictor"]["serviceAccountName"] == "fer-mtl-predictor"
    assert {"name": "STORAGE_URI", "value": "gs://fer-models/run-44/model"} in created["spec"]["predictor"][
        "containers"
    ][0]["env"]


def test_cli_dry_run_prints_manifest_and_patch(capsys: pytest.CaptureFixture[str]) -> None:
    from fer_cli import main

    code = main(
        ["deploy", "--storage-uri", "gs://fer-models/run-45/model", "--namespace", NS, "--canary", "30", "--dry-run"]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["create"]["metadata"]["namespace"] == NS
    assert printed["patch_if_exists"]["spec"]["predictor"]["canaryTrafficPercent"] == 30


def test_cli_deploys_and_reports(
    fake_kube: tuple[FakeKube, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fer_model.release.deploy as deploy_module
    from fer_cli import main

    _, api = fake_kube
    monkeypatch.setattr(deploy_module, "default_api", lambda: api)
    argv = ["deploy", "--storage-uri", "gs://fer-models/run-46/model", "--namespace", NS, "--poll-interval", "0.01"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out) == {
        "action": "created",
        "name": "fer-mtl",
        "namespace": NS,
        "url": URL,
        "canary_traffic_percent": None,
    }


def test_cli_bad_flag_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from fer_cli import main

    assert main(["deploy", "--storage-uri", "/not/a/uri", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "`storage_uri` must be a URI" in err and err.count("\n") == 1
