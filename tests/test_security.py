"""Security promises: no code runs from an artifact, no credential leaks, least-privilege RBAC and pods.

Code execution is detected with a marker file: every hostile payload here (a Lambda layer, a pickle's
`__reduce__`, a module a config names) writes the marker if it ever runs, so a refusal that came
after the payload ran still fails the test.
"""

from __future__ import annotations

import ast
import base64
import json
import logging
import pickle
import shutil
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from fer_model.errors import ArtifactError
from tests._fixtures.models import rerecord_file_hashes
from tests.test_deploy import fake_kube  # noqa: F401 (a fixture, used through request.getfixturevalue)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "fer_model" / "pretrained"


# --- model loading runs no code from the artifact ------------------------------------------------


class _Boom:
    """Unpickling this creates `path`: proof that the pickle was read."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def _hostile_lambda(marker: Path):  # noqa: ANN202 (a lambda, whose code Keras marshals into the file)
    # The marker path is a constant inside the code object, so the marshalled bytecode carries it.
    return eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")  # noqa: S307


def _artifact_with_model(tmp_path: Path, model_file: Path) -> Path:
    """A copy of the shipped artifact with `model_file` as its model.keras, its hashes re-recorded.

    Whoever crafts a hostile model.keras can rewrite config.json too, so the file hashes must not be
    what stops it: the archive checks must.
    """
    artifact = tmp_path / "artifact"
    shutil.copytree(SHIPPED_MODEL, artifact, ignore=shutil.ignore_patterns("saved_model"))
    shutil.copy(model_file, artifact / "model.keras")
    rerecord_file_hashes(artifact)
    return artifact


def _lambda_model(marker: Path):  # noqa: ANN202
    """A model with the shipped artifact's heads, whose Lambda layer writes `marker` when called."""
    import keras

    inputs = keras.Input((50, 50, 1), name="image")
    x = keras.layers.Lambda(_hostile_lambda(marker), name="payload")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = {t: keras.layers.Dense(n, activation="softmax", name=t)(x)
               for t, n in (("emotion", 7), ("gender", 3), ("race", 3), ("age", 5))}
    model = keras.Model(inputs, outputs)
    marker.unlink()  # building the model called the lambda once; only a later call counts
    return model


@pytest.fixture(scope="module")
def lambda_keras_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a .keras file holding a Lambda layer, the marker its code writes)."""
    pytest.importorskip("keras")
    root = tmp_path_factory.mktemp("lambda")
    marker = root / "lambda-ran"
    path = root / "model.keras"
    _lambda_model(marker).save(path)
    return path, marker


def test_the_shipped_model_passes_the_check_and_loads() -> None:
    from fer_model._keras_file import check_keras_file
    from fer_model.model_artifact import load_model_artifact

    check_keras_file(SHIPPED_MODEL / "model.keras")
    artifact = load_model_artifact(SHIPPED_MODEL)
    assert sorted(artifact.model.output_names) == sorted(artifact.config.tasks)


def test_the_marker_detects_code_that_runs(lambda_keras_file: tuple[Path, Path]) -> None:
    # The control: Keras with safe mode off does run the lambda, so an absent marker below means something.
    import keras

    path, marker = lambda_keras_file
    keras.saving.load_model(path, compile=False, safe_mode=False)
    assert marker.exists()
    marker.unlink()


def test_a_lambda_layer_artifact_is_refused_and_its_code_never_runs(
    lambda_keras_file: tuple[Path, Path], tmp_path: Path
) -> None:
    from fer_model.model_artifact import load_model_artifact

    path, marker = lambda_keras_file
    with pytest.raises(ArtifactError, match=r"config.layers\[\d\] is a 'Lambda', which carries Python code"):
        load_model_artifact(_artifact_with_model(tmp_path, path))
    assert not marker.exists()


def test_keras_safe_mode_still_refuses_the_lambda_without_our_check(
    lambda_keras_file: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two locks: with the archive check removed, Keras's own safe mode (passed explicitly) refuses it.
    from fer_model import _keras_file

    path, marker = lambda_keras_file
    monkeypatch.setattr(_keras_file, "check_keras_file", lambda path: None)
    with pytest.raises(ArtifactError, match="cannot be loaded:.*(safe_mode|unsafe)"):
        _keras_file.load_keras_model(path)
    assert not marker.exists()


def test_warm_start_refuses_a_lambda_model_too(lambda_keras_file: tuple[Path, Path]) -> None:
    from fer_model.model import ModelConfig, build_model
    from fer_model.warm_start import copy_matching_weights

    path, marker = lambda_keras_file
    with pytest.raises(ArtifactError, match="carries Python code"):
        copy_matching_weights(build_model(ModelConfig(width=0.25)), path)
    assert not marker.exists()


def test_a_legacy_hdf5_model_named_model_keras_is_refused(tmp_path: Path) -> None:
    # Keras hands a non-zip file to its legacy HDF5 loader, whose Lambda handling is not safe_mode's.
    marker = tmp_path / "h5-ran"
    marker.touch()
    _lambda_model(marker).save(tmp_path / "legacy.h5")
    with pytest.raises(ArtifactError, match=r"not a readable Keras 3 \.keras archive"):
        from fer_model.model_artifact import load_model_artifact

        load_model_artifact(_artifact_with_model(tmp_path, tmp_path / "legacy.h5"))
    assert not marker.exists()


def _rewrite_archive(source: Path, target: Path, *, extra: dict[str, bytes] | None = None,
                     config: dict | None = None) -> None:
    """Copy a .keras zip, adding members and/or replacing its config.json."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json" and config is not None:
                data = json.dumps(config).encode()
            new.writestr(item, data)
        for name, data in (extra or {}).items():
            new.writestr(name, data)


def test_a_pickle_inside_the_keras_archive_is_refused_unread(tmp_path: Path) -> None:
    from fer_model.model_artifact import load_model_artifact

    marker = tmp_path / "pickle-ran"
    hostile = tmp_path / "hostile.keras"
    _rewrite_archive(SHIPPED_MODEL / "model.keras", hostile, extra={"assets/payload.pkl": pickle.dumps(_Boom(marker))})
    with pytest.raises(ArtifactError, match=r"holds \['assets/payload.pkl'\]"):
        load_model_artifact(_artifact_with_model(tmp_path, hostile))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.pkl", "scaler.joblib", "extra.npy"])
def test_a_pickle_beside_the_model_is_refused_unread(tmp_path: Path, name: str) -> None:
    from fer_model.model_artifact import load_model_artifact

    marker = tmp_path / "pickle-ran"
    artifact = _artifact_with_model(tmp_path, SHIPPED_MODEL / "model.keras")
    if name.endswith(".npy"):
        np.save(artifact / name, np.array([_Boom(marker)], dtype=object), allow_pickle=True)
    else:
        (artifact / name).write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ArtifactError, match=rf"holds \['{name}'\]: a fer-mtl model artifact holds no pickles"):
        load_model_artifact(artifact)
    assert not marker.exists()


def test_a_config_naming_a_foreign_module_is_refused_unimported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_model.model_artifact import load_model_artifact

    marker = tmp_path / "module-imported"
    (tmp_path / "evil_layers.py").write_text(f"open({str(marker)!r}, 'w').close()\nDense = object\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with zipfile.ZipFile(SHIPPED_MODEL / "model.keras") as archive:
        config = json.loads(archive.read("config.json"))
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense.update(module="evil_layers", registered_name="evil_layers>Dense")
    hostile = tmp_path / "hostile.keras"
    _rewrite_archive(SHIPPED_MODEL / "model.keras", hostile, config=config)
    with pytest.raises(ArtifactError, match=r"names evil_layers.Dense, outside Keras"):
        load_model_artifact(_artifact_with_model(tmp_path, hostile))
    assert not marker.exists() and "evil_layers" not in sys.modules


def test_a_dataset_with_a_pickled_label_array_is_refused_unread(tmp_path: Path) -> None:
    from fer_model.dataset import LABELS_FILE, MANIFEST_FILE, load_dataset, sha256_file, write_dataset
    from fer_model.tasks import TASK_NAMES

    n = 4
    labels = {t: np.zeros(n, dtype=np.int8) for t in TASK_NAMES}
    root = write_dataset(tmp_path / "ds", images=np.zeros((n, 50, 50), np.uint8), labels=labels,
                         split=np.zeros(n, np.uint8))
    marker = tmp_path / "pickle-ran"
    hostile = {t: np.array([_Boom(marker)] * n, dtype=object) for t in TASK_NAMES}
    np.savez(root / LABELS_FILE, **hostile)
    # The attacker rewrites the recorded hash too, so only the loader's refusal to unpickle stands in the way.
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["sha256"][LABELS_FILE] = sha256_file(root / LABELS_FILE)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="unreadable array file: Object arrays cannot be loaded"):
        load_dataset(root, mmap=False)
    assert not marker.exists()


def _calls(name: str) -> list[tuple[Path, ast.Call]]:
    """Every call of `<something>.name(...)` in fer_model/, with its file."""
    found = []
    for file in sorted((ROOT / "fer_model").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                found.append((file, node))
    return found


def _keyword_is_literal(call: ast.Call, keyword: str, value: object) -> bool:
    return any(k.arg == keyword and isinstance(k.value, ast.Constant) and k.value.value is value
               for k in call.keywords)


def test_every_numpy_load_refuses_pickles() -> None:
    loads = _calls("load")
    numpy_loads = [(f, c) for f, c in loads if isinstance(c.func.value, ast.Name) and c.func.value.id == "np"]
    assert len(numpy_loads) >= 4  # the dataset, its pack and the training checkpoint
    unsafe = [f"{f.relative_to(ROOT)}:{c.lineno}" for f, c in numpy_loads
              if not _keyword_is_literal(c, "allow_pickle", False)]
    assert unsafe == [], "np.load without allow_pickle=False"


def test_keras_models_are_loaded_in_one_place_with_safe_mode() -> None:
    calls = _calls("load_model")
    assert [(f.name, _keyword_is_literal(c, "safe_mode", True)) for f, c in calls] == [("_keras_file.py", True)]


# --- no credentials in pipeline specs, manifests or logs -----------------------------------------

#: Test secrets, supplied the ways users supply them; none may show up anywhere below.
KFP_TOKEN = "kfp-token-5d1e-never-print-me"
KFP_COOKIE_VALUE = "sess-9c3a-never-print-me"
DB_PASSWORD = "db-password-71f0-never-print-me"
GCS_KEY_SECRET = "gcs-private-key-a24b-never-print-me"
SECRETS = (KFP_TOKEN, KFP_COOKIE_VALUE, DB_PASSWORD, GCS_KEY_SECRET)
#: Secret *names* may appear: they are how a spec refers to a secret.
TUNING_SECRET_NAME = "team-a-optuna-db"


def _leaks(text: str) -> list[str]:
    """The test secrets (or their base64, as a Kubernetes Secret would hold them) found in `text`."""
    encoded = [base64.b64encode(s.encode()).decode() for s in SECRETS]
    return [s for s in (*SECRETS, *encoded) if s in text]


@pytest.fixture
def secrets_in_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every secret where a user keeps it: KFP token and cookie and the DB password in the environment,
    a service-account key file named by GOOGLE_APPLICATION_CREDENTIALS."""
    key_file = tmp_path / "sa-key.json"
    key_file.write_text(json.dumps({"type": "service_account", "private_key": GCS_KEY_SECRET}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("KF_PIPELINES_TOKEN", KFP_TOKEN)
    monkeypatch.setenv("KF_PIPELINES_COOKIE", f"authservice_session={KFP_COOKIE_VALUE}")
    monkeypatch.setenv("OPTUNA_DB_PASSWORD", DB_PASSWORD)


def test_the_compiled_pipeline_names_secrets_but_holds_none(secrets_in_environment: None, tmp_path: Path) -> None:
    from pipelines.runner import compile_to

    path, _ = compile_to(tmp_path / "pipeline.yaml", tuning_secret=TUNING_SECRET_NAME)
    text = path.read_text()
    assert _leaks(text) == [] and "private_key" not in text
    # The password reaches tune workers by reference: the Secret's name and the variable it fills.
    assert TUNING_SECRET_NAME in text and "OPTUNA_DB_PASSWORD" in text


def test_a_submitted_run_and_its_logs_hold_no_secret(
    secrets_in_environment: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    import kfp

    from fer_cli import main
    from tests.test_submit_auth import FakeKfp

    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    caplog.set_level(logging.DEBUG)
    server = FakeKfp({"Authorization": f"Bearer {KFP_TOKEN}", "Cookie": f"authservice_session={KFP_COOKIE_VALUE}"})
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # The token and cookie come from the environment; the run compiles here (no --package).
        rc = main(["pipeline", "submit", "--host", server.url, "--tuning-secret", TUNING_SECRET_NAME,
                   "-p", "tuning_storage=postgresql://optuna:${OPTUNA_DB_PASSWORD}@db:5432/optuna"])
    finally:
        server.shutdown()
        server.server_close()
    out, err = capsys.readouterr()
    assert rc == 0, err
    (run,) = server.runs
    sent = json.dumps(run)
    assert TUNING_SECRET_NAME in sent and "${OPTUNA_DB_PASSWORD}" in sent  # references travel, values do not
    assert _leaks(sent) == [] and _leaks(out + err + caplog.text) == []


def test_a_literal_database_password_is_refused_before_submission(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
) -> None:
    from fer_cli import main

    rc = main(["pipeline", "submit", "--host", "http://127.0.0.1:9", "--package", str(ROOT / "README.md"),
               "-p", f"tuning_storage=postgresql://optuna:{DB_PASSWORD}@db:5432/optuna"])
    err = capsys.readouterr().err
    assert rc == 2 and "holds a literal password" in err
    assert _leaks(err + caplog.text) == []


def test_rendered_manifests_refer_to_secrets_by_name_only(
    secrets_in_environment: None, tmp_path: Path
) -> None:
    from tests._kustomize import kustomize_build

    overlay = tmp_path / "manifests" / "overlays" / "team"
    shutil.copytree(ROOT / "manifests" / "base", tmp_path / "manifests" / "base")
    overlay.mkdir(parents=True)
    # The overlay the base documents: the DB password generated from a git-ignored file.
    (overlay / "tuning-postgres.password").write_text(DB_PASSWORD)
    (overlay / "kustomization.yaml").write_text(json.dumps({
        "resources": ["../../base"], "namespace": "team-a",
        "secretGenerator": [{"name": "fer-mtl-tuning-postgres", "behavior": "merge",
                             "files": ["password=tuning-postgres.password"],
                             "options": {"disableNameSuffixHash": True}}],
    }))
    for folder in (ROOT / "manifests" / "base", ROOT / "manifests" / "overlays" / "sample"):
        assert _leaks(json.dumps(kustomize_build(folder))) == [], folder
    docs = kustomize_build(overlay)
    secret_docs = [d for d in docs if d["kind"] == "Secret"]
    # The generated Secret is the one place the password lives; every pod takes it by secretKeyRef.
    assert [_leaks(json.dumps(d)) for d in secret_docs] == [[base64.b64encode(DB_PASSWORD.encode()).decode()]]
    others = json.dumps([d for d in docs if d["kind"] != "Secret"])
    assert _leaks(others) == [] and '"secretKeyRef"' in others


# --- RBAC grants what deploy uses, in its namespace ---------------------------------------------

_HTTP_VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}


def _manifests(name: str) -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all((ROOT / "manifests" / "base" / name).read_text()) if d]


def _granted(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


def test_the_deployer_role_grants_exactly_what_deploy_calls(request: pytest.FixtureRequest) -> None:
    from tests.test_deploy import NS, _config, _deploy

    kube, api = request.getfixturevalue("fake_kube")  # the deploy tests' fake Kubernetes API
    _deploy(api, _config())  # first run: create
    _deploy(api, _config(image="europe-docker.pkg.dev/proj/fer/fer-mtl-predictor:0.2.0"))  # canary patch
    prefix = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
    assert all(path.startswith(prefix) for _, path, _, _ in kube.requests), "deploy left its namespace"
    used = {("serving.kserve.io", "inferenceservices", _HTTP_VERBS[method]) for method, *_ in kube.requests}
    assert {verb for *_, verb in used} == {"get", "create", "patch"}
    (role,) = [d for d in _manifests("deploy-rbac.yaml") if d["kind"] == "Role"]
    assert _granted(role) == used


@pytest.mark.parametrize("name", ["deploy-rbac.yaml", "pipeline-rbac.yaml"])
def test_rbac_is_namespaced_and_has_no_wildcard(name: str) -> None:
    docs = _manifests(name)
    kinds = {d["kind"] for d in docs}
    assert kinds <= {"ServiceAccount", "Role", "RoleBinding"}, "cluster-scoped RBAC"
    for doc in docs:
        assert "namespace" not in doc["metadata"]  # the overlay's namespace applies to all of it
    for role in (d for d in docs if d["kind"] == "Role"):
        for group, resource, verb in _granted(role):
            assert "*" not in (group, resource, verb)
            assert verb not in {"delete", "deletecollection", "escalate", "bind", "impersonate", "update"}
            if resource == "secrets":  # one named Secret the launcher reads, never the namespace's Secrets
                rule = next(r for r in role["rules"] if "secrets" in r["resources"])
                assert rule["verbs"] == ["get"] and len(rule["resourceNames"]) == 1
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert all(s["kind"] == "ServiceAccount" and "namespace" not in s for s in binding["subjects"])


# --- least privilege for every pod the manifests and the deploy step create ----------------------

#: What every container must run with (container level, or inherited from the pod's securityContext).
REQUIRED_SECURITY = {
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_LEVEL = ("runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile")


def _containers(doc: dict) -> list[tuple[str, dict, dict]]:
    """(where, container, pod securityContext) for every container a workload document runs."""
    if doc["kind"] == "InferenceService":
        predictor = doc["spec"]["predictor"]
        pod, containers = predictor.get("securityContext", {}), list(predictor.get("containers", []))
        if "model" in predictor:
            containers.append({"name": "model", **predictor["model"]})
    elif doc["kind"] in {"StatefulSet", "Deployment", "Job", "DaemonSet"}:
        spec = doc["spec"]["template"]["spec"]
        pod, containers = spec.get("securityContext", {}), spec["containers"] + spec.get("initContainers", [])
    else:
        return []
    return [(f"{doc['kind']}/{doc['metadata']['name']}/{c['name']}", c, pod) for c in containers]


def _privilege_gaps(doc: dict) -> list[str]:
    """Every container field of `doc` that misses `REQUIRED_SECURITY`, as "where: field"."""
    gaps = []
    for where, container, pod in _containers(doc):
        effective = {**{k: v for k, v in pod.items() if k in _POD_LEVEL}, **container.get("securityContext", {})}
        gaps += [f"{where}: {key}" for key, value in REQUIRED_SECURITY.items() if effective.get(key) != value]
        if effective.get("runAsUser") == 0:
            gaps.append(f"{where}: runAsUser 0")
    return gaps


def _rendered_workloads() -> list[dict]:
    from tests._kustomize import kustomize_build

    docs = kustomize_build(ROOT / "manifests" / "overlays" / "sample")  # the base, plus the TF Serving one
    return [d for d in docs if _containers(d)]


def test_every_manifest_container_runs_least_privileged() -> None:
    workloads = _rendered_workloads()
    names = {(d["kind"], d["metadata"]["name"]) for d in workloads}
    assert {("InferenceService", "fer-mtl"), ("InferenceService", "fer-mtl-tf"),
            ("StatefulSet", "fer-mtl-tuning-postgres")} <= names
    assert [gap for doc in workloads for gap in _privilege_gaps(doc)] == []


def test_the_check_catches_a_missing_setting() -> None:
    (predictor,) = [d for d in _rendered_workloads() if d["metadata"]["name"] == "fer-mtl"]
    del predictor["spec"]["predictor"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
    assert _privilege_gaps(predictor) == ["InferenceService/fer-mtl/kserve-container: readOnlyRootFilesystem"]


def test_the_deployed_predictor_runs_as_the_images_user_with_a_writable_tmp_only() -> None:
    from fer_model.release.deploy import DeployConfig, build_inferenceservice, canary_patch

    config = DeployConfig(image="img:1", storage_uri="gs://b/m")
    built = build_inferenceservice(config)
    assert _privilege_gaps(built) == []
    (container,) = built["spec"]["predictor"]["containers"]
    dockerfile = (ROOT / "images" / "predictor" / "Dockerfile").read_text()
    assert f"USER {container['securityContext']['runAsUser']}" in dockerfile
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    # A canary rollout carries the same pod security (a merge patch replaces the container list).
    assert _privilege_gaps({**built, "spec": canary_patch(config)["spec"]}) == []


# --- every label a page draws is escaped ----------------------------------------------------------

HOSTILE_LABELS = ("<script>window.__pwned=1</script>", '"><img src=x onerror="window.__pwned=1">',
                  "'><svg onload=window.__pwned=1>", "&lt;already-escaped&gt; & <b>bold</b>")
_REPORT_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "ul", "li", "table",
                "thead", "tbody", "tr", "th", "td", "strong", "code", "img"}


class _Elements:
    """Tags, attributes and text of an HTML page, as a browser's parser sees them."""

    def __init__(self, page: str) -> None:
        from html.parser import HTMLParser

        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        outer = self

        class Parser(HTMLParser):
            def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
                outer.tags.append((tag, dict(attrs)))

            def handle_data(self, data: str) -> None:
                outer.text.append(data)

        parser = Parser(convert_charrefs=True)
        parser.feed(page)
        parser.close()


def test_the_html_report_escapes_hostile_labels(tmp_path: Path) -> None:
    from fer_model.html_page import markdown_to_html

    (tmp_path / "chart.png").write_bytes(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="))
    label, breakout, svg, mixed = HOSTILE_LABELS
    markdown = "\n".join([
        f"# Report for {label}", "", f"| class | {breakout} |", "|---|---|", f"| {svg} | **{label}** |", "",
        f"- `{breakout}`", f"- {mixed}", "", f"A paragraph naming {svg}.", "", f"![{breakout}](chart.png)",
    ])
    page = _Elements(markdown_to_html(markdown, images_dir=tmp_path, title=label))
    assert {tag for tag, _ in page.tags} <= _REPORT_TAGS
    assert not [(tag, name) for tag, attrs in page.tags for name in attrs if name.startswith("on")]
    (image,) = [attrs for tag, attrs in page.tags if tag == "img"]
    assert image["alt"] == breakout and image["src"].startswith("data:image/png;base64,")
    text = "".join(page.text)
    for hostile in HOSTILE_LABELS:  # drawn as the very characters, not as markup
        assert hostile in text



class _HostilePredictor(ThreadingHTTPServer):
    """Serves the try-it page's files WITHOUT its Content-Security-Policy (so escaping alone is under
    test) and answers like a predictor whose model name and labels are all hostile markup."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HostileHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _hostile_prediction() -> dict:
    label, breakout, svg, mixed = HOSTILE_LABELS
    task = {"label": label, "probabilities": {label: 0.7, breakout: 0.2, svg: 0.05, mixed: 0.05}}
    return {"predictions": [{"faces": [{"box": [0, 0, 1, 1], "predictions": {
        t: task for t in ("emotion", "gender", "race", "age")}}]}]}


class _HostileHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        from fer_model.serving.page import ASSETS, asset_bytes

        if self.path in ASSETS:
            name, content_type = ASSETS[self.path]
            return self._send(200, asset_bytes(name), content_type)
        if self.path == "/v1/models":
            return self._send(200, json.dumps({"models": [HOSTILE_LABELS[1]]}).encode(), "application/json")
        return self._send(404, b"{}", "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.refuse:  # type: ignore[attr-defined]
            body = json.dumps({"error": HOSTILE_LABELS[1]}).encode()
            return self._send(400, body, "application/json")
        return self._send(200, json.dumps(_hostile_prediction()).encode(), "application/json")


@pytest.fixture(scope="module")
def hostile_page() -> Iterator[tuple[_HostilePredictor, object]]:
    """(the hostile predictor, a headless Chromium on its page); skipped without Chromium."""
    from tests.test_page_browser import CHROMIUM_FLAGS, _missing, _skip_or_fail

    reason = _missing()
    if reason:
        _skip_or_fail(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    server = _HostilePredictor()
    server.refuse = False  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield server, driver
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()


_TINY_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def _upload_to(driver: object, server: _HostilePredictor, tmp_path: Path) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "photo.png"
    photo.write_bytes(_TINY_PNG)
    driver.get(f"{server.url}/")  # type: ignore[attr-defined]
    driver.find_element("id", "file").send_keys(str(photo))  # type: ignore[attr-defined]
    app = driver.find_element("id", "app")  # type: ignore[attr-defined]
    WebDriverWait(driver, 30).until(lambda _: app.get_attribute("data-state") in ("done", "error"))
    return app.get_attribute("data-state")


_DRAWN = """
    const drawn = [...document.querySelectorAll('#faces *, #boxes *, #error *, #status *')];
    return {pwned: window.__pwned === 1, tags: [...new Set(drawn.map((e) => e.tagName.toLowerCase()))],
            labels: [...document.querySelectorAll('#faces .top, #faces .class, #boxes .box-label')]
                      .map((e) => e.textContent),
            error: document.getElementById('error').textContent};
"""


@pytest.mark.browser
def test_the_page_draws_hostile_labels_as_text(hostile_page: tuple, tmp_path: Path) -> None:
    server, driver = hostile_page
    server.refuse = False
    assert _upload_to(driver, server, tmp_path) == "done"
    shown = driver.execute_script(_DRAWN)
    assert not shown["pwned"]
    assert set(shown["tags"]) <= {"li", "h2", "h3", "section", "span", "div"}  # no img, script, svg, b
    assert shown["labels"].count(HOSTILE_LABELS[0]) == 4 * 2  # each task's top label and its own row
    assert set(HOSTILE_LABELS) <= set(shown["labels"]) and f"1: {HOSTILE_LABELS[0]}" in shown["labels"]


@pytest.mark.browser
def test_the_page_shows_a_hostile_refusal_as_text(hostile_page: tuple, tmp_path: Path) -> None:
    server, driver = hostile_page
    server.refuse = True
    assert _upload_to(driver, server, tmp_path) == "error"
    shown = driver.execute_script(_DRAWN)
    assert not shown["pwned"] and HOSTILE_LABELS[1] in shown["error"] and shown["tags"] == []
