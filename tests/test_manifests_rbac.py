"""The pipeline's ServiceAccount and RBAC (manifests/base/pipeline-rbac.yaml) and the base kustomization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._kustomize import kustomize_build

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "manifests" / "base"
KUBERNETES_VERSION = "1.30"
SA = "fer-mtl-pipeline"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def rbac() -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in _docs(BASE / "pipeline-rbac.yaml")}


def test_documents_validate_against_the_kubernetes_schemas(rbac: dict) -> None:
    import kubernetes_validate

    assert set(rbac) == {
        ("ServiceAccount", SA), ("Role", SA), ("RoleBinding", SA), ("RoleBinding", "fer-mtl-pipeline-deployer"),
    }
    for doc in rbac.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_invalid_rbac_is_caught_by_the_validator(rbac: dict) -> None:
    import kubernetes_validate

    broken = yaml.safe_load(yaml.safe_dump(rbac[("Role", SA)]))
    broken["rules"][0]["verbs"] = "create"  # a string where a list belongs
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_role_is_least_privilege(rbac: dict) -> None:
    rules = rbac[("Role", SA)]["rules"]
    for rule in rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"])
        if rule["resources"] in (["secrets"], ["configmaps"]):
            # Read one named object, never list or watch the namespace's Secrets/ConfigMaps.
            assert rule["verbs"] == ["get"] and rule["resourceNames"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {
        ("argoproj.io", "workflowtaskresults", "create"),
        ("argoproj.io", "workflowtaskresults", "patch"),
        ("", "configmaps", "get"),
        ("", "secrets", "get"),
    }


def test_bindings_tie_the_pipeline_account_to_its_role_and_the_deployer_role(rbac: dict) -> None:
    subject = [{"kind": "ServiceAccount", "name": SA}]
    own = rbac[("RoleBinding", SA)]
    assert own["subjects"] == subject
    assert own["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SA}
    deployer = rbac[("RoleBinding", "fer-mtl-pipeline-deployer")]
    assert deployer["subjects"] == subject and deployer["roleRef"]["kind"] == "Role"
    # The bound Role exists in the base (the serving engineer's deploy RBAC).
    roles = {d["metadata"]["name"] for d in _docs(BASE / "deploy-rbac.yaml") if d["kind"] == "Role"}
    assert deployer["roleRef"]["name"] in roles


def test_cli_submits_runs_under_this_account() -> None:
    import argparse

    from fer_cli import pipeline as cli

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["pipeline", "submit", "--host", "http://x"])
    assert args.service_account == SA


def test_kustomization_lists_every_base_manifest() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "a manifest under manifests/base is missing from kustomization.yaml (or vice versa)"


def test_base_builds_with_kustomize_and_validates() -> None:
    import kubernetes_validate

    docs = kustomize_build(BASE)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert {("ServiceAccount", SA), ("RoleBinding", "fer-mtl-pipeline-deployer"), ("Role", "fer-mtl-deployer")} <= kinds
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fer-mtl"
        if doc["apiVersion"].startswith(("v1", "apps/", "rbac.authorization.k8s.io/")):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
