"""One table from the benchmark results (`benchmarks/results/*.json`, written through `_machine.Run`).

Prints every figure with its baseline and ratio, and the machine each ran on. `--readme` rewrites
README.md's speed table (between the `bench:begin` / `bench:end` markers) from the full-size
results, falling back to a `--quick` result where no full one exists.

Run: python benchmarks/report.py [--quick] [--readme]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _machine import RESULTS_DIR, describe, fmt

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
QUICK = "_quick"


def load_results(results_dir: Path, *, quick: bool) -> dict[str, dict[str, Any]]:
    """name -> result, for results in the `_machine` format; `quick` picks the --quick ones.

    Without `quick`, a full result wins over the quick one of the same benchmark.
    """
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("*.json")):
        body = json.loads(path.read_text())
        if not isinstance(body, dict) or "figures" not in body or "machine" not in body:
            continue  # an older format
        is_quick = path.stem.endswith(QUICK)
        stem = path.stem.removesuffix(QUICK)
        if is_quick if quick else (not is_quick or stem not in out):
            out[stem] = body
    return out


def _ratio(figure: dict[str, Any]) -> str:
    return f"x{figure['ratio']:.2f}" if figure.get("ratio") is not None else "-"


def _baseline(figure: dict[str, Any]) -> str:
    if figure.get("baseline_value") is None:
        return "-"
    return f"{figure['baseline']}: {fmt(figure['baseline_value'])} {figure['unit']}"


def _machines(results: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: describe(body["machine"]) for name, body in results.items()}


def print_table(results: dict[str, dict[str, Any]]) -> None:
    rows = [("figure", "ours", "baseline", "ratio", "machine (load start->end)")]
    for body in results.values():
        machine = body["machine"]
        where = f"{describe(machine)} (load {machine['loadavg_start'][:1]}->{machine['loadavg_end'][:1]})"
        for f in body["figures"]:
            rows.append((f["name"], f"{fmt(f['value'])} {f['unit']}", _baseline(f), _ratio(f), where))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("ratio > 1: ours is better than the baseline measured in the same process, on the same machine.")


def readme_table(results: dict[str, dict[str, Any]]) -> str:
    """The Markdown speed table, with the machine(s) and the load each ran under."""
    lines = ["| figure | ours | baseline in the same run | ratio |", "|---|---|---|---|"]
    for body in results.values():
        for f in body["figures"]:
            name = f["name"].replace("|", "\\|")  # a figure named "|eye tilt|" must not split its row
            lines.append(f"| {name} | {fmt(f['value'])} {f['unit']} | {_baseline(f)} | {_ratio(f)} |")
    by_machine: dict[str, list[str]] = {}
    for name, machine in _machines(results).items():
        by_machine.setdefault(machine, []).append(name)
    # Machines of one kind differ 4x in speed: with more than one, say which results each produced.
    machines = sorted(by_machine) if len(by_machine) == 1 else sorted(
        f"{machine} ({', '.join(names)})" for machine, names in by_machine.items())
    loads = ", ".join(f"{name} {b['machine']['loadavg_start'][0]}->{b['machine']['loadavg_end'][0]}"
                      for name, b in results.items())
    dates = sorted(b["machine"]["date"][:10] for b in results.values())
    lines += ["", f"Machine: {'; '.join(machines)}; measured {dates[0]}..{dates[-1]}. It was shared while "
              f"measuring (1-minute load average at start->end: {loads}), so absolute figures are low and "
              "noisy; the ratios compare against a baseline run in the same process, alternated where "
              "possible. Ratio > 1: ours is better."]
    return "\n".join(lines)


def rewrite_readme(results: dict[str, dict[str, Any]], readme: Path = README) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        sys.exit(f"{readme} has no {BEGIN} ... {END} markers around its speed table; add them first")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{readme_table(results)}\n{END}{tail}")
    print(f"rewrote the speed table in {readme}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the --quick results (what `make bench` writes)")
    parser.add_argument("--readme", action="store_true", help="rewrite README.md's speed table (full results)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder")
    args = parser.parse_args()
    results = load_results(args.results, quick=args.quick and not args.readme)
    if not results:
        sys.exit(f"no results in {args.results}; run the benchmarks first (make bench)")
    print_table(results)
    if args.readme:
        rewrite_readme(results)


if __name__ == "__main__":
    main()
