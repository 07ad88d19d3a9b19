"""The container images, built and run: what a cluster would do with them, on this machine's Docker daemon.

Marked `images`. Without a daemon the module skips with one line; under CI (env CI set) a missing
daemon fails instead, so CI cannot pass without proving the images. The images come from `make images`
(images/build.sh); each test module brings them up to date from the layer cache first. Every container uses host
networking and every server binds 127.0.0.1: no traffic leaves loopback.

The GPU training image (tensorflow[and-cuda], several GB) is checked only when FER_IMAGES_GPU=1:
`make images` builds it, but a cold build of it would double CI's image time and disk for a check
that, without a GPU here, proves no more than imports (see README "Run on Kubeflow").
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.images

REPO = Path(__file__).resolve().parents[1]
REGISTRY = os.environ.get("IMAGE_REGISTRY", "ghcr.io/fer-mtl")
TAG = os.environ.get("IMAGE_TAG", "0.1.0")
CPU_IMAGE = f"{REGISTRY}/fer-mtl-cpu:{TAG}"
PREDICTOR_IMAGE = f"{REGISTRY}/fer-mtl-predictor:{TAG}"
GPU_IMAGE = f"{REGISTRY}/fer-mtl-gpu:{TAG}"
MODEL = REPO / "fer_model" / "pretrained"
NAME = "fer-mtl"


def _docker_client() -> str | None:
    """A client that talks to a running daemon (Debian's /usr/bin/docker first: it builds without buildx)."""
    for client in ("/usr/bin/docker", "docker"):
        path = shutil.which(client)
        if path and subprocess.run([path, "info"], capture_output=True, timeout=30).returncode == 0:
            return path
    return None


@pytest.fixture(scope="module")
def docker() -> str:
    client = _docker_client()
    if client is None:
        reason = ("no Docker daemon answers `docker info`; start one with host networking only, "
                  "`dockerd --bridge=none --iptables=false --ip6tables=false &`, to run the image tests")
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI the image tests must run (.ci/run starts that daemon)")
        pytest.skip(reason)
    return client


def _build(docker: str, *roles: str) -> None:
    """Bring `roles`' images up to date with images/build.sh, on the base each was built from.

    The images must exist (`make images`, which .ci/run runs before the tests): building them cold
    needs PyPI and a base, which is the build's business, not a test's. An up-to-date image, or one
    whose code alone changed, rebuilds from the layer cache in seconds without any network.
    """
    names = {"component": CPU_IMAGE, "predictor": PREDICTOR_IMAGE, "train-gpu": GPU_IMAGE}
    bases = {}
    for role in roles:
        found = subprocess.run([docker, "image", "inspect", "-f", '{{index .Config.Labels "io.fer-mtl.base"}}',
                                names[role]], capture_output=True, text=True, timeout=60)
        if found.returncode != 0 or not found.stdout.strip():
            reason = f"{names[role]} is not built here: run `make images` (or images/build.sh {role}) first"
            if os.environ.get("CI"):
                pytest.fail(f"{reason}; under CI the image tests must run")
            pytest.skip(reason)
        bases[role] = found.stdout.strip()
    for role in roles:
        env = {**os.environ, "DOCKER": docker, "IMAGE_REGISTRY": REGISTRY, "IMAGE_TAG": TAG, "BASE": bases[role]}
        done = subprocess.run([str(REPO / "images" / "build.sh"), role], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=3600)
        assert done.returncode == 0, done.stderr[-5000:]


@pytest.fixture(scope="module")
def images(docker: str) -> str:
    """The client, once the component and predictor images are up to date."""
    _build(docker, "component", "predictor")
    return docker


def _run(docker: str, image: str, *command: str, entrypoint: str | None = None) -> str:
    """Output of `command` in a throwaway container of `image` (host network, no capabilities)."""
    args = [docker, "run", "--rm", "--network=host", "--cap-drop", "ALL"]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    done = subprocess.run([*args, image, *command], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


_MODULES = "import importlib.util as u, json; print(json.dumps({m: u.find_spec(m) is not None for m in %r}))"
_CHECKED = ["fer_model", "fer_cli", "components", "pipelines", "tensorflow", "cv2", "kfp", "optuna", "psycopg2",
            "kserve", "pytest", "ruff", "skimage"]


def _modules(docker: str, image: str) -> dict[str, bool]:
    return json.loads(_run(docker, image, "python", "-c", _MODULES % _CHECKED, entrypoint="").strip())


def test_component_image_carries_the_pipeline_role_only(images: str) -> None:
    have = _modules(images, CPU_IMAGE)
    assert all(have[m] for m in ("fer_model", "fer_cli", "components", "pipelines", "tensorflow", "kfp", "optuna"))
    assert not any(have[m] for m in ("kserve", "pytest", "ruff", "skimage")), have
    assert _run(images, CPU_IMAGE, "id", "-u", entrypoint="").strip() == "10001"


def test_predictor_image_carries_the_serving_role_only(images: str) -> None:
    have = _modules(images, PREDICTOR_IMAGE)
    assert all(have[m] for m in ("fer_model", "fer_cli", "tensorflow", "cv2", "kserve"))
    assert not any(have[m] for m in ("kfp", "optuna", "psycopg2", "pytest", "ruff", "skimage")), have


# --- the predictor, run as KServe runs it ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def predictor(images: str) -> Iterator[tuple[str, str]]:
    """The predictor container on a loopback port: model read-only at /mnt/models, uid 10001,
    read-only root filesystem with a writable /tmp (KServe's emptyDir), no capabilities."""
    requests = pytest.importorskip("requests")
    port = _free_port()
    name = f"fer-mtl-predictor-test-{port}"
    started = subprocess.run(
        [images, "run", "-d", "--rm", "--name", name, "--network=host", "--user", "10001:10001",
         "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "-v", f"{MODEL}:/mnt/models:ro", PREDICTOR_IMAGE,
         "--model", "/mnt/models", "--name", NAME, "--host", "127.0.0.1", "--port", str(port)],
        capture_output=True, text=True, timeout=120,
    )
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(images, name, url, requests)
        yield name, url
    finally:
        subprocess.run([images, "rm", "-f", name], capture_output=True, timeout=60)


def _wait_ready(docker: str, name: str, url: str, requests: Any) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v2/models/{NAME}/ready", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        running = subprocess.run([docker, "inspect", "-f", "{{.State.Running}}", name],
                                 capture_output=True, text=True, timeout=30)
        if running.stdout.strip() != "true":
            break
        time.sleep(1)
    logs = subprocess.run([docker, "logs", name], capture_output=True, text=True, timeout=30)
    pytest.fail(f"the predictor container never became ready:\n{(logs.stdout + logs.stderr)[-4000:]}")


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A real photograph (skimage's astronaut, one face) as JPEG."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def in_process_labels(photo: bytes) -> dict[str, str]:
    """What the in-process Predictor (`fer-mtl predict`) says about the photo's one face."""
    from fer_model.predict import Predictor

    faces = Predictor(MODEL).predict([photo])[0]
    assert len(faces) == 1
    return {task: faces[0].label(task) for task in faces[0].probabilities}


def test_predictor_v1_gives_the_in_process_labels(
    predictor: tuple[str, str], photo: bytes, in_process_labels: dict[str, str]
) -> None:
    import requests

    _, url = predictor
    body = {"instances": [{"b64": base64.b64encode(photo).decode()}]}
    r = requests.post(f"{url}/v1/models/{NAME}:predict", json=body, timeout=120)
    assert r.status_code == 200, r.text
    faces = r.json()["predictions"][0]["faces"]
    assert len(faces) == 1
    assert {task: p["label"] for task, p in faces[0]["predictions"].items()} == in_process_labels


def test_predictor_v2_gives_the_in_process_labels(
    predictor: tuple[str, str], photo: bytes, in_process_labels: dict[str, str]
) -> None:
    import requests

    _, url = predictor
    body = {"id": "img-1", "inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(photo).decode()]}]}
    r = requests.post(f"{url}/v2/models/{NAME}/infer", json=body, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == "img-1"
    faces = json.loads({o["name"]: o for o in r.json()["outputs"]}["faces"]["data"][0])["faces"]
    assert len(faces) == 1
    assert {task: p["label"] for task, p in faces[0]["predictions"].items()} == in_process_labels


def test_predictor_readiness_and_metrics_answer(predictor: tuple[str, str]) -> None:
    import requests

    _, url = predictor
    assert requests.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    assert requests.get(f"{url}/v1/models/{NAME}", timeout=10).json()["ready"] is True
    metrics = requests.get(f"{url}/metrics", timeout=10)
    assert metrics.status_code == 200
    assert "# TYPE" in metrics.text  # Prometheus exposition format


def _exec(docker: str, name: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker, "exec", name, *command], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("image", [CPU_IMAGE, PREDICTOR_IMAGE])
def test_images_run_as_uid_10001_by_default(images: str, image: str) -> None:
    # The image's own default, not only what the predictor fixture passes with --user.
    user = subprocess.run([images, "image", "inspect", "-f", "{{.Config.User}}", image],
                          capture_output=True, text=True, timeout=60)
    assert user.stdout.strip() == "10001"


def test_running_predictor_is_unprivileged_and_read_only(predictor: tuple[str, str], images: str) -> None:
    """The container that served the tests above, run as the manifests run it: uid 10001, no capabilities,
    no privilege escalation, nothing writable but /tmp."""
    name, _ = predictor
    assert _exec(images, name, "id", "-u").stdout.strip() == "10001"
    status = dict(line.split(":\t", 1) for line in _exec(images, name, "cat", "/proc/1/status").stdout.splitlines()
                  if ":\t" in line)
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    inspected = json.loads(subprocess.run([images, "inspect", name], capture_output=True, text=True,
                                          timeout=60).stdout)[0]["HostConfig"]
    assert inspected["ReadonlyRootfs"] is True and inspected["CapDrop"] == ["ALL"]
    for path in ("/home/fer/probe", "/opt/venv/probe", "/mnt/models/probe"):
        assert _exec(images, name, "touch", path).returncode != 0, f"{path} is writable"
    assert _exec(images, name, "touch", "/tmp/probe").returncode == 0


def test_predictor_stops_on_sigterm(predictor: tuple[str, str], images: str) -> None:
    """Runs last in this module: Kubernetes sends SIGTERM first; the server must exit well before
    the grace period (30 s) ends in a SIGKILL."""
    name, _ = predictor
    subprocess.run([images, "kill", "--signal", "TERM", name], check=True, capture_output=True, timeout=30)
    try:
        subprocess.run([images, "wait", name], capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail("the predictor container still ran 15 s after SIGTERM")


# --- no credentials in any layer ------------------------------------------------------------------

#: Files that hold credentials by their name alone.
_CREDENTIAL_NAMES = (".git-credentials", ".netrc", ".pypirc", ".docker/config.json", ".kube/config", "id_rsa",
                     "id_ed25519", "application_default_credentials.json")
#: Build-time places that must leave nothing in a layer: BuildKit's secret mounts and pip's cache mount.
_BUILD_ONLY = ("run/secrets/", "root/.cache/pip/")
#: Debian's CA store in the base image is the same public file as this machine's bundle, not a leak.
_SYSTEM_CA_STORE = "etc/ssl/certs/ca-certificates.crt"


def _ca_bundle() -> Path | None:
    """The CA bundle images/build.sh passes as the `ca_bundle` build secret on this machine."""
    named = os.environ.get("CA_BUNDLE") or os.environ.get("PIP_CERT")
    if not named:
        done = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"],
                              capture_output=True, text=True, timeout=60)
        named = done.stdout.strip() if done.returncode == 0 else ""
    return Path(named) if named and Path(named).is_file() else None


def _layer_findings(docker: str, image: str, bundle: Path | None) -> tuple[list[str], int]:
    """(credential-like files in any layer of `image`, even ones a later layer deletes; layers read)."""
    import hashlib

    bundle_sha = hashlib.sha256(bundle.read_bytes()).hexdigest() if bundle else None
    bundle_size = bundle.stat().st_size if bundle else -1
    findings: list[str] = []
    layers = 0
    save = subprocess.Popen([docker, "save", image], stdout=subprocess.PIPE)
    assert save.stdout is not None
    with tarfile.open(fileobj=save.stdout, mode="r|") as outer:
        for blob in outer:
            if not blob.isfile() or not (blob.name.endswith("layer.tar") or "blobs/" in blob.name):
                continue
            found = _scan_layer(outer.extractfile(blob), bundle_sha, bundle_size)
            if found is not None:  # None: a config or manifest blob, not a layer
                layers += 1
                findings += found
    assert save.wait(timeout=600) == 0
    return findings, layers


def _scan_layer(fileobj: Any, bundle_sha: str | None, bundle_size: int) -> list[str] | None:
    """The findings in one layer tar (possibly compressed); None when `fileobj` is not a tar."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r|*") as layer:
            return [f for member in layer for f in _member_findings(layer, member, bundle_sha, bundle_size)]
    except tarfile.ReadError:
        return None


def _member_findings(layer: Any, member: Any, bundle_sha: str | None, bundle_size: int) -> list[str]:
    import hashlib

    name = member.name.lstrip("./")
    base = os.path.basename(name).removeprefix(".wh.")
    if name.startswith(_BUILD_ONLY) or any(name.endswith(c) for c in _CREDENTIAL_NAMES) or base in _CREDENTIAL_NAMES:
        return [name]
    if not member.isfile():
        return []
    if (member.size == bundle_size and name != _SYSTEM_CA_STORE
            and hashlib.sha256(layer.extractfile(member).read()).hexdigest() == bundle_sha):
        return [f"{name} (the build's CA bundle)"]
    if name.endswith(".json") and member.size < 65536:
        data = layer.extractfile(member).read()
        if b'"private_key"' in data and b"service_account" in data:
            return [f"{name} (a service-account key)"]
    return []


def test_the_layer_scan_finds_planted_credentials(tmp_path: Path) -> None:
    # The scan itself, on a layer built here: each planted file is found, an ordinary one is not.
    import hashlib

    bundle = b"-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    planted = {"home/fer/.git-credentials": b"https://u:p@example.com", "run/secrets/ca_bundle": bundle,
               "opt/venv/certs/copy.pem": bundle, "srv/key.json": b'{"type": "service_account", "private_key": "k"}',
               "root/.cache/pip/http/x": b"cached", "opt/venv/lib/ok.py": b"print(1)"}
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w:gz") as tar:
        for name, data in planted.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    layer.seek(0)
    found = _scan_layer(layer, hashlib.sha256(bundle).hexdigest(), len(bundle))
    assert found == ["home/fer/.git-credentials", "run/secrets/ca_bundle",
                     "opt/venv/certs/copy.pem (the build's CA bundle)", "srv/key.json (a service-account key)",
                     "root/.cache/pip/http/x"]
    assert _scan_layer(io.BytesIO(b'{"config": "not a tar"}'), None, -1) is None


@pytest.mark.parametrize("image", [CPU_IMAGE, PREDICTOR_IMAGE])
def test_no_layer_holds_credentials_or_the_build_secret(images: str, image: str) -> None:
    findings, layers = _layer_findings(images, image, _ca_bundle())
    assert layers >= 5, "docker save held no readable layers: the scan saw nothing"
    assert findings == []
    env = subprocess.run([images, "image", "inspect", "-f", "{{json .Config.Env}}", image],
                         capture_output=True, text=True, timeout=60).stdout
    assert not [v for v in json.loads(env) if any(w in v.split("=")[0] for w in ("TOKEN", "PASSWORD", "SECRET",
                                                                                    "CREDENTIAL", "CERT"))]
    history = subprocess.run([images, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                             capture_output=True, text=True, timeout=60).stdout
    assert "BEGIN CERTIFICATE" not in history  # a secret passed as a build argument would show here


# --- the pipeline, every task in its image ---------------------------------------------------------


def test_demo_pipeline_runs_in_the_images(images: str, tmp_path: Path) -> None:
    """`fer-mtl pipeline run --local --runner docker` with the demo's parameters, end to end:
    prepare, the Optuna workers on a journal file in the pipeline root, select, train, evaluate,
    gate, and the dry-run deploy. Training runs in the component image unless the GPU image is
    built (FER_IMAGES_GPU=1): both hold the same code, the GPU one adds CUDA libraries."""
    from fer_cli.demo import DEMO_PARAMS

    gpu = GPU_IMAGE if os.environ.get("FER_IMAGES_GPU") == "1" else CPU_IMAGE
    cmd = [sys.executable, "-m", "fer_cli", "pipeline", "run", "--local", "--runner", "docker", "--out", str(tmp_path),
           "--cpu-image", CPU_IMAGE, "--gpu-image", gpu, "--predictor-image", PREDICTOR_IMAGE]
    for name, value in {**DEMO_PARAMS, "seed": 0}.items():
        cmd += ["-p", f"{name}={value}"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-6000:]
    check_demo_run(tmp_path, DEMO_PARAMS)


def check_demo_run(out: Path, params: dict[str, Any]) -> None:
    """What a finished `--runner docker` demo left under `out`: every task's outputs, and the tuning
    study the workers shared through the journal file on the mounted pipeline root."""
    root = out / "pipeline-root"
    # The workers shared one study through the journal file on the mounted pipeline root.
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(root / "optuna-journal.log")))
    (study,) = optuna.get_all_study_summaries(storage)
    done_trials = optuna.load_study(study_name=study.study_name, storage=storage).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done_trials) == params["tune_config.n_trials"]
    run_dir = next(p for p in root.iterdir() if p.is_dir())
    tasks = {m.parent.relative_to(run_dir).as_posix() for m in run_dir.rglob("executor_output.json")}
    for task in ("prepare", "select-best", "train", "evaluate", "gate", "deploy"):
        assert any(t == task or t.endswith("/" + task) for t in tasks), (task, sorted(tasks))
    assert sum("tune-worker" in t for t in tasks) == params["tune_workers"], sorted(tasks)


# --- the GPU training image (opt-in) ---------------------------------------------------------------


def test_gpu_image_imports_tensorflow_and_fer_model(docker: str) -> None:
    if os.environ.get("FER_IMAGES_GPU") != "1":
        pytest.skip("GPU image check is opt-in (FER_IMAGES_GPU=1): several GB, and no GPU here to prove more")
    _build(docker, "train-gpu")
    out = _run(docker, GPU_IMAGE, "python", "-c",
               "import tensorflow as tf, fer_model, keras, fer_model.model; "
               "print(tf.__version__, len(tf.config.list_physical_devices('GPU')))", entrypoint="")
    version, gpus = out.split()[-2:]
    assert version.startswith("2.20") and gpus == "0"  # CPU fallback here
