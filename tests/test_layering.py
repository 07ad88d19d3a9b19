"""Every import points one way: core <- serving <- release <- components <- pipelines <- CLI, no circles.

The modules are parsed, not imported, so the check is fast and sees imports inside functions and under
`if TYPE_CHECKING:` too: a lazy import that points up a layer is still a dependency that points up.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fer_model", "fer_cli", "components", "pipelines")

# Longest prefix wins; a higher number may import a lower one, never the reverse.
LAYERS = {
    "fer_model": 0,  # library core
    "fer_model.serving": 1,  # serving runtime (the KServe predictor)
    "fer_model.release": 2,  # release: evaluation gate, InferenceService deploy, CRD schema
    "components": 3,
    "pipelines": 4,
    "fer_cli": 5,
}
LAYER_NAMES = {number: name for name, number in LAYERS.items()}

# Third-party packages a layer must not use, whatever it imports them for.
FORBIDDEN = {
    0: ("kfp", "kserve", "kubernetes"),
    1: ("kfp", "kubernetes"),
    2: ("kfp",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def layer_of(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def imports_of(module: str) -> tuple[str, ...]:
    """Every name `module` imports (any depth in the file), resolved to a module where it is one."""
    path = modules()[module]
    known = modules()
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            # `from pkg import mod` depends on pkg.mod when that is a module, else on pkg itself.
            targets = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known]
            found.extend(targets or [source])
    return tuple(found)


def internal_edges() -> dict[str, set[str]]:
    known = modules()
    return {module: {name for name in imports_of(module) if name in known and name != module} for module in known}


def test_every_package_is_found():
    names = modules()
    assert "fer_model.training" in names and "components.train" in names and "pipelines.fer_pipeline" in names
    assert "fer_cli" in names, "the CLI lives in its own top-level package, above the pipelines"


def test_no_import_points_up_a_layer():
    upward = [
        f"{module} ({LAYER_NAMES[layer_of(module)]}) imports {target} ({LAYER_NAMES[layer_of(target)]})"
        for module, targets in internal_edges().items()
        for target in sorted(targets)
        if layer_of(target) > layer_of(module)
    ]
    assert upward == [], "imports that point up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_lower_layers_do_not_use_deployment_packages(layer: int):
    banned = FORBIDDEN[layer]
    offenders = [
        f"{module} imports {name}"
        for module in modules()
        if layer_of(module) == layer
        for name in imports_of(module)
        if name.split(".")[0] in banned
    ]
    assert offenders == [], f"{LAYER_NAMES[layer]} must not use {banned}:\n" + "\n".join(offenders)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _without_package_reexports(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    # A package's __init__ re-exporting its own modules is not a circle with them: importing
    # `pkg.mod` runs `pkg/__init__` first by Python's rules, whichever way the code is laid out.
    known = modules()
    return {
        module: {
            target
            for target in targets
            if not (known[module].name == "__init__.py" and target.startswith(module + "."))
        }
        for module, targets in edges.items()
    }


def test_no_import_circle_between_modules():
    circles = _cycles(_without_package_reexports(internal_edges()))
    assert circles == [], "modules that import each other (directly or around a loop):\n" + "\n".join(
        " <-> ".join(circle) for circle in circles
    )


def test_the_cycle_finder_finds_a_circle():
    # The check above passing means nothing if the finder could not see a loop.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
