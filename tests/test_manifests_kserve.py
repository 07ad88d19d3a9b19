"""KServe manifests: InferenceServices against the vendored CRD schema, RBAC against Kubernetes' schemas,
the sample overlay built with kustomize, and the deploy code agreeing with the base manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from fer_model.release.crd_schema import SCHEMA_FILE, build_schema
from fer_model.release.deploy import DeployConfig, build_inferenceservice, canary_patch
from tests._kustomize import kustomize_build

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "manifests" / "base"
SAMPLE = ROOT / "manifests" / "overlays" / "sample"
KUBERNETES_VERSION = "1.30"
OUR_BASE_FILES = ("inferenceservice.yaml", "deploy-rbac.yaml")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def isvc_validator():
    import jsonschema

    schema = json.loads((ROOT / SCHEMA_FILE).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator: Any, doc: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_vendored_schema_matches_the_installed_kserve_sdk() -> None:
    # Regenerate with `python -m fer_model.release.crd_schema > manifests/crds/...` after a kserve upgrade.
    assert json.loads((ROOT / SCHEMA_FILE).read_text()) == build_schema()


def test_base_inferenceservice_is_valid(isvc_validator: Any) -> None:
    (doc,) = _docs(BASE / "inferenceservice.yaml")
    assert _errors(isvc_validator, doc) == []


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["spec"]["predictor"].__setitem__("minReplica", 1), "'minReplica' was unexpected"),
        (lambda d: d["spec"]["predictor"].__setitem__("canaryTrafficPercent", 150), "150 is greater than"),
        (lambda d: d["spec"]["predictor"]["containers"][0].pop("name"), "'name' is a required property"),
        (lambda d: d["spec"]["predictor"].__setitem__("maxReplicas", "three"), "'three' is not of type"),
        (lambda d: d.__setitem__("apiVersion", "serving.kserve.io/v1alpha1"), "serving.kserve.io/v1beta1"),
    ],
)
def test_schema_catches_mistakes(isvc_validator: Any, mutate: Any, where: str) -> None:
    (doc,) = _docs(BASE / "inferenceservice.yaml")
    mutate(doc)
    errors = _errors(isvc_validator, doc)
    assert errors and any(where in e for e in errors), errors


def test_deploy_code_writes_what_the_base_manifest_says(isvc_validator: Any) -> None:
    (doc,) = _docs(BASE / "inferenceservice.yaml")
    container = doc["spec"]["predictor"]["containers"][0]
    storage_uri = next(e["value"] for e in container["env"] if e["name"] == "STORAGE_URI")
    config = DeployConfig(image=container["image"], storage_uri=storage_uri, namespace="fer")
    built = build_inferenceservice(config)
    assert _errors(isvc_validator, built) == []
    # Same spec; only the namespace differs (kustomize sets it for the manifest).
    assert built["spec"] == doc["spec"]
    assert {k: v for k, v in built["metadata"].items() if k != "namespace"} == doc["metadata"]
    patched = {**built, "spec": canary_patch(config)["spec"]}
    assert _errors(isvc_validator, patched) == []


def test_deploy_rbac_is_valid_and_least_privilege() -> None:
    import kubernetes_validate

    docs = _docs(BASE / "deploy-rbac.yaml")
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    _, role, binding = docs
    assert role["rules"] == [
        {
            "apiGroups": ["serving.kserve.io"],
            "resources": ["inferenceservices"],
            "verbs": ["get", "create", "patch"],
        }
    ]
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["roleRef"] == role_ref
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": docs[0]["metadata"]["name"]}]


def test_rbac_allows_every_call_deploy_makes() -> None:
    # deploy() reads (get), creates, patches and polls (get); the Role must allow exactly those and no delete.
    (_, role, _) = _docs(BASE / "deploy-rbac.yaml")
    verbs = set(role["rules"][0]["verbs"])
    assert {"get", "create", "patch"} <= verbs
    assert not verbs & {"delete", "deletecollection", "update", "*"}


def _build_sample(tmp_path: Path) -> list[dict[str, Any]]:
    """Build the sample overlay over a base holding only our files (the real base has more)."""
    base = tmp_path / "manifests" / "base"
    base.mkdir(parents=True)
    for name in OUR_BASE_FILES:
        shutil.copy(BASE / name, base / name)
    (base / "kustomization.yaml").write_text(yaml.safe_dump({"resources": list(OUR_BASE_FILES)}))
    shutil.copytree(SAMPLE, tmp_path / "manifests" / "overlays" / "sample")
    return kustomize_build(tmp_path / "manifests" / "overlays" / "sample")


def test_sample_overlay_builds_and_validates(tmp_path: Path, isvc_validator: Any) -> None:
    import kubernetes_validate

    docs = _build_sample(tmp_path)
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert all(d["metadata"]["namespace"] == "fer-mtl-sample" for d in docs)
    for (kind, _), doc in by_name.items():
        if kind == "InferenceService":
            assert _errors(isvc_validator, doc) == []
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    custom = by_name[("InferenceService", "fer-mtl")]["spec"]["predictor"]
    (container,) = custom["containers"]
    # The JSON patch changed what it should and kept the rest of the container.
    assert custom["minReplicas"] == 0 and custom["serviceAccountName"] == "fer-mtl-predictor"
    assert container["env"] == [{"name": "STORAGE_URI", "value": "gs://fer-mtl-sample/runs/sample/model"}]
    assert container["args"][-2:] == ["--max-images", "8"]
    assert container["command"] == ["fer-mtl", "serve"] and container["resources"]["limits"]["memory"] == "4Gi"
    assert ("ServiceAccount", "fer-mtl-predictor") in by_name
    tf = by_name[("InferenceService", "fer-mtl-tf")]["spec"]["predictor"]["model"]
    assert tf["modelFormat"] == {"name": "tensorflow"}
    assert tf["storageUri"].endswith("/model/saved_model")  # TF Serving wants the folder above 1/


def test_real_sample_overlay_includes_serving(isvc_validator: Any) -> None:
    base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    missing = [f for f in OUR_BASE_FILES if f not in (base.get("resources") or [])]
    assert not missing, f"manifests/base/kustomization.yaml must list {missing} in resources"
    docs = kustomize_build(SAMPLE)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("InferenceService", "fer-mtl"), ("Role", "fer-mtl-deployer"), ("InferenceService", "fer-mtl-tf")} <= names


def _page_on(args: list[str]) -> bool:
    """What `fer-mtl serve` makes of these args: the page is on unless the last page flag is --no-page."""
    from fer_cli import build_parser

    return build_parser().parse_args(["serve", *args]).page


def test_the_page_is_off_on_a_cluster_unless_asked_for(tmp_path: Path) -> None:
    (base,) = _docs(BASE / "inferenceservice.yaml")
    assert not _page_on(base["spec"]["predictor"]["containers"][0]["args"])
    built = build_inferenceservice(DeployConfig(image="img:1", storage_uri="gs://b/m"))
    assert not _page_on(built["spec"]["predictor"]["containers"][0]["args"])
    opted_in = build_inferenceservice(DeployConfig(image="img:1", storage_uri="gs://b/m", server_args=("--page",)))
    assert _page_on(opted_in["spec"]["predictor"]["containers"][0]["args"])
    assert _page_on([])  # a local `fer-mtl serve` shows it
    sample = next(d for d in _build_sample(tmp_path) if d["metadata"]["name"] == "fer-mtl")
    assert not _page_on(sample["spec"]["predictor"]["containers"][0]["args"])
