"""Gather the ablation's result.json + metrics.json files into results.md and results.json.

    python experiments/real_faces/ablation/table.py RESULTS_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TASKS = ("emotion", "gender", "race", "age")
# Table order and labels; arms not listed go last under their folder name.
LABELS = {
    "a_single_task": "(a) single-task emotion",
    "a_single_task_seed1": "(a) single-task emotion, seed 1",
    "b_multi_task": "(b) multi-task as today",
    "b_multi_task_seed1": "(b) multi-task as today, seed 1",
    "c_balanced_9epochs": "(c) + balanced batches (9 epochs = (b)'s steps)",
    "c_balanced_seed1": "(c) + balanced batches (9 epochs), seed 1",
    "d_teachers": "(d) (c) + subset teachers (6 epochs each, threshold 0.5)",
    "d_teachers_seed1": "(d) (c) + subset teachers, seed 1",
    "f_shipped_teachers": "(f) (c) + the shipped model as teacher (threshold 0.5)",
    "f_shipped_teachers_seed1": "(f) (c) + the shipped model as teacher, seed 1",
    "e_cosine": "(e) (d) + cosine decay to 0",
    "teacher_agr": "teacher: gender/race/age, UTKFace faces only",
}


def infant_share(metrics: dict[str, Any]) -> float | None:
    """Share of emotion-labelled test faces (FER2013 PublicTest) the age head puts in 0-3."""
    groups = metrics.get("fairness_by_predicted_group", {}).get("age")
    if not groups:
        return None
    total = sum(g["n"] for g in groups.values())
    return groups["0-3"]["n"] / total if total else None


def row_of(folder: Path) -> dict[str, Any] | None:
    result = json.loads((folder / "result.json").read_text())
    # A teacher without an emotion head keeps its metrics as teacher_metrics.json: every committed
    # metrics.json is checked for an emotion head (tests/test_artifact_files.py).
    found = [folder / name for name in ("metrics.json", "teacher_metrics.json") if (folder / name).exists()]
    if not found:
        return None
    metrics = json.loads(found[0].read_text())
    history = json.loads((folder / "history.json").read_text())
    config = json.loads((folder / "config.json").read_text())  # its best_epoch is 0-based
    row = {"arm": result["arm"], "description": result["description"], "seed": result["seed"],
           "epochs": len(next(iter(history.values()))), "best_epoch": config["best_epoch"] + 1,
           "train_seconds": result["wall_seconds"], "load": result["load_before"][0],
           "load_after": result["load_after"][0], "machine": result["machine"],
           "fer_age_0_3_share": infant_share(metrics)}
    for task in TASKS:
        m = metrics["tasks"].get(task)
        row[f"{task}_accuracy"] = m["accuracy"] if m else None
        row[f"{task}_macro_f1"] = m["macro_f1"] if m else None
    return row


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| arm | emotion acc % | emotion macro-F1 % | gender % | race % | age % | FER age 0-3 % "
            "| epochs (best) | train wall s | load (1-min, start/end) |\n|" + "---|" * 10 + "\n")
    lines = [f"| {LABELS.get(r['arm'], r['arm'])} | {_pct(r['emotion_accuracy'])} | {_pct(r['emotion_macro_f1'])} "
             f"| {_pct(r['gender_accuracy'])} | {_pct(r['race_accuracy'])} | {_pct(r['age_accuracy'])} "
             f"| {_pct(r['fer_age_0_3_share'])} | {r['epochs']} ({r['best_epoch']}) | {r['train_seconds']:.0f} "
             f"| {r['load']:.1f} / {r['load_after']:.1f} |" for r in rows]
    m = rows[0]["machine"] if rows else {}
    foot = (f"\nMachine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('avx_flags')}), TensorFlow on CPU, "
            "shared with other processes (load above).\n")
    return head + "\n".join(lines) + "\n" + foot


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args()
    rows = [r for f in sorted(p.parent for p in args.results.glob("*/result.json")) if (r := row_of(f))]
    order = list(LABELS)
    rows.sort(key=lambda r: order.index(r["arm"]) if r["arm"] in order else len(order))
    (args.results / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (args.results / "results.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
