"""Record a long `fer-mtl train` run as it stands: its finished epochs, their wall times and its state.

    python experiments/real_faces/record_run.py RUN_OUT TRAIN_LOG RESULTS --code-commit SHA --command CMD

RUN_OUT is the run's --out folder: its epoch checkpoint while it runs, its model artifact once it has
finished. TRAIN_LOG is everything the run printed, across every resume (the "epoch N/M: ..." lines
give the wall time of each epoch; an epoch cut short by a stop and run again counts as its last run).
Writes RESULTS/epochs.log (those lines) and RESULTS/result.json, and prints the README table's rows.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _machine import _cpu_model, cpu_flags  # noqa: E402

# `fer-mtl train`'s epoch checkpoint (fer_cli.train, fer_model.checkpoint), read here without
# importing Keras, which those modules load.
CHECKPOINT = Path("checkpoint") / "checkpoint.npz"

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): (?:(\d+)h)?(?:(\d+)m)?(\d+)?s?, (loss .*?)(?:; at most .*)?$")


def epoch_lines(log: Path) -> tuple[dict[int, tuple[str, float]], int]:
    """(epoch number -> (the line from "epoch" on, minutes), the run's epoch budget); a later line for
    the same epoch wins."""
    found: dict[int, tuple[str, float]] = {}
    budget = 0
    for raw in log.read_text(errors="replace").splitlines():
        start = raw.find("epoch ")
        match = EPOCH_LINE.match(raw[start:]) if start >= 0 else None
        if match is None:
            continue
        hours, minutes, seconds = (int(g or 0) for g in match.group(3, 4, 5))
        text = raw[start:].split("; at most")[0]
        found[int(match.group(1))] = (text, round(hours * 60 + minutes + seconds / 60, 1))
        budget = int(match.group(2))
    return found, budget


def run_state(run_out: Path) -> dict[str, Any]:
    """Epochs done, finished or not, best epoch (1-based) and the per-epoch history."""
    checkpoint = run_out / CHECKPOINT
    if checkpoint.exists():
        with np.load(checkpoint, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
        best = meta["callback_counters"].get("early_stopping", {}).get("best_epoch")
        return {"epochs_done": meta["epochs_done"], "finished": meta["finished"],
                "best_epoch": None if best is None else int(best) + 1, "history": meta["history"]}
    history = json.loads((run_out / "history.json").read_text())
    config = json.loads((run_out / "config.json").read_text())
    epochs = len(next(iter(history.values())))
    best = config.get("best_epoch")
    return {"epochs_done": epochs, "finished": True, "best_epoch": None if best is None else int(best) + 1,
            "history": history}


def machine() -> dict[str, Any]:
    flags = cpu_flags()
    return {"cpu": _cpu_model(), "avx2": flags.get("avx2", False), "avx512f": flags.get("avx512f", False),
            "cores": len(os.sched_getaffinity(0))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_out", type=Path)
    parser.add_argument("train_log", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--code-commit", required=True)
    parser.add_argument("--command", required=True, help="the run's command line, as recorded")
    args = parser.parse_args()

    state = run_state(args.run_out)
    lines, total = epoch_lines(args.train_log)
    history, done = state["history"], state["epochs_done"]
    epochs = []
    for epoch in range(1, done + 1):
        row: dict[str, Any] = {"epoch": epoch, "wall_min": lines.get(epoch, ("", None))[1]}
        row.update({k: round(float(v[epoch - 1]), 4) for k, v in sorted(history.items()) if len(v) >= epoch})
        epochs.append(row)
    status = ("finished" if state["finished"] else
              f"in progress: {done} of {total} epochs done; continue with experiments/real_faces/cpu_scratch.sh")
    result = {"status": status, "command": args.command, "code_commit": args.code_commit, "machine": machine(),
              "checkpoint": {k: state[k] for k in ("epochs_done", "finished", "best_epoch")}, "epochs": epochs}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "epochs.log").write_text("".join(lines[e][0] + "\n" for e in sorted(lines) if e <= done))
    print(f"wrote {args.results}: {status}")
    for row in epochs:
        pct = {t: 100 * row.get(f"val_{t}_accuracy", float("nan")) for t in ("emotion", "gender", "race", "age")}
        print(f"| {row['epoch']} | {pct['emotion']:.2f} | {pct['gender']:.2f} / {pct['race']:.2f} / "
              f"{pct['age']:.2f} | {row['wall_min']} |")


if __name__ == "__main__":
    main()
