"""The benchmark result format (benchmarks/_machine.py) and the table built from it (benchmarks/report.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import report  # noqa: E402
from _machine import Figure, Run  # noqa: E402


def _write(out: Path, name: str, value: float) -> None:
    run = Run(name, {"n": 1, "path": Path("/x")})
    run.add(Figure("speed", value, "images/s", baseline="plain", baseline_value=50.0))
    run.add(Figure("latency", 10.0, "ms", baseline="peer", baseline_value=40.0, higher_is_better=False))
    run.write(out)


def test_a_result_carries_the_machine_and_ratios(tmp_path: Path) -> None:
    _write(tmp_path, "training", 100.0)
    body = json.loads((tmp_path / "training.json").read_text())
    machine = body["machine"]
    assert machine["cores"] >= 1 and set(machine["flags"]) >= {"avx2", "avx512f"}
    assert len(machine["loadavg_start"]) == 3 and machine["versions"]["python"]
    speed, latency = body["figures"]
    assert speed["ratio"] == pytest.approx(2.0)  # 100 vs 50 images/s
    assert latency["ratio"] == pytest.approx(4.0)  # 10 vs 40 ms: lower is better, ratio still > 1
    assert body["settings"] == {"n": 1, "path": "/x"}


def test_full_results_win_over_quick_ones_except_when_asked(tmp_path: Path) -> None:
    _write(tmp_path, "training_quick", 60.0)
    _write(tmp_path, "training", 100.0)
    _write(tmp_path, "serving_quick", 70.0)
    (tmp_path / "old_format.json").write_text(json.dumps({"results": []}))
    full = report.load_results(tmp_path, quick=False)
    assert {k: v["figures"][0]["value"] for k, v in full.items()} == {"training": 100.0, "serving": 70.0}
    quick = report.load_results(tmp_path, quick=True)
    assert {k: v["figures"][0]["value"] for k, v in quick.items()} == {"training": 60.0, "serving": 70.0}


def test_readme_table_is_rewritten_between_the_markers_only(tmp_path: Path) -> None:
    _write(tmp_path, "training", 100.0)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nstale row\n{report.END}\nafter\n")
    report.rewrite_readme(report.load_results(tmp_path, quick=False), readme)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{report.END}\nafter\n")
    assert "stale row" not in text and "| speed | 100.0 images/s | plain: 50.0 images/s | x2.00 |" in text
    assert "cores" in text  # the machine is named


def test_readme_without_markers_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "training", 100.0)
    readme = tmp_path / "README.md"
    readme.write_text("no table here\n")
    with pytest.raises(SystemExit, match="markers"):
        report.rewrite_readme(report.load_results(tmp_path, quick=False), readme)
    assert readme.read_text() == "no table here\n"


def test_readme_table_names_each_machines_results_when_they_differ(tmp_path: Path) -> None:
    _write(tmp_path, "training", 100.0)
    _write(tmp_path, "serving", 70.0)
    one = report.readme_table(report.load_results(tmp_path, quick=False))
    assert "(serving, training)" not in one and "(training)" not in one  # one machine: nothing to tell apart
    body = json.loads((tmp_path / "serving.json").read_text())
    body["machine"]["flags"] = {flag: flag == "avx2" for flag in body["machine"]["flags"]}
    body["machine"]["cpu"] = "Another CPU"
    (tmp_path / "serving.json").write_text(json.dumps(body))
    two = report.readme_table(report.load_results(tmp_path, quick=False))
    line = next(ln for ln in two.splitlines() if ln.startswith("Machine:"))
    assert "Another CPU, AVX2, " in line and "(serving)" in line and "(training)" in line
