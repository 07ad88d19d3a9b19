"""What every benchmark result carries: the machine it ran on, and one writer for `results/<name>.json`.

2-core machines differ by 4x (AVX2 vs AVX-512), and this one is shared, so a figure means little
without its CPU, its flags, the cores this process may use and the load around the run; ratios
against a baseline measured in the same process mean more, and every figure holds one.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@dataclass(frozen=True)
class Figure:
    """One measured figure and, where there is one, its baseline from the same process.

    `ratio` is `value / baseline_value` unless `higher_is_better` is False (times), where it is
    `baseline_value / value`: a ratio above 1 always means ours is better.
    """

    name: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or not self.value or not self.baseline_value:
            return None
        return self.value / self.baseline_value if self.higher_is_better else self.baseline_value / self.value

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}

    def line(self) -> str:
        """One printable line: name, value, and the baseline with the ratio."""
        text = f"{self.name:52s} {fmt(self.value):>10} {self.unit}"
        if self.baseline_value is not None:
            ratio = "-" if self.ratio is None else f"x{self.ratio:.2f}"  # None: a zero on either side
            text += f"   vs {self.baseline} {fmt(self.baseline_value)}: {ratio}"
        return text


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.split(":", 1)[-1].split())
    return {f: f in flags for f in _FLAGS}


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    # Only report what this process already imported: a benchmark of light code should not pay
    # for TensorFlow here.
    for name in ("tensorflow", "keras", "jax", "cv2", "optuna"):
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", None) if module else None
    keras = sys.modules.get("keras")
    if keras is not None:
        versions["keras_backend"] = keras.backend.backend()
    return versions


def _loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


class Run:
    """A benchmark run: notes the machine and load at start, collects figures, writes the JSON at the end.

    Args:
        name: Result file stem: `benchmarks/results/<name>.json`.
        settings: The run's arguments (sizes, repeats), stored beside the figures.
    """

    def __init__(self, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        self.settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items()}
        self.figures: list[Figure] = []
        self.started = time.time()
        self.load_start = _loadavg()

    def add(self, figure: Figure) -> Figure:
        """Keep `figure` and print its line."""
        self.figures.append(figure)
        print(figure.line(), flush=True)
        return figure

    def machine(self) -> dict[str, Any]:
        return {
            "cpu": _cpu_model(),
            "flags": cpu_flags(),
            "cores": len(os.sched_getaffinity(0)),
            "ram_gib": _ram_gib(),
            "loadavg_start": self.load_start,
            "loadavg_end": _loadavg(),
            "versions": _versions(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "seconds": round(time.time() - self.started, 1),
        }

    def write(self, out_dir: Path = RESULTS_DIR) -> Path:
        """Write `<out_dir>/<name>.json` and return its path."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{self.name}.json"
        body = {"machine": self.machine(), "figures": [f.to_dict() for f in self.figures],
                "settings": self.settings}
        path.write_text(json.dumps(body, indent=2) + "\n")
        machine = body["machine"]
        print(f"wrote {path} ({machine['cpu']}, {machine['cores']} cores, "
              f"load {machine['loadavg_start']} -> {machine['loadavg_end']})", flush=True)
        return path


def describe(machine: dict[str, Any]) -> str:
    """A short description of a result's machine: CPU, AVX-512 or not, cores."""
    flags = machine.get("flags", {})
    isa = "AVX-512" if flags.get("avx512f") else "AVX2" if flags.get("avx2") else "no AVX2"
    if flags.get("avx512_bf16"):
        isa += " (bf16)"
    return f"{machine.get('cpu', '?')}, {isa}, {machine.get('cores', '?')} cores"
