"""Run the issue-13 ablation arms one after another with `fer-mtl` and record each step's wall time.

    python experiments/real_faces/ablation/run.py DATA_DIR RUNS_DIR RESULTS_DIR [--epochs 6] [--seed 0]
        [--only a,teacher_agr,...]

DATA_DIR holds `mixed`, `fer` and `utk` from make_subsets.py. Models and the taught dataset go to
RUNS_DIR (large, not committed); RESULTS_DIR/<arm>/ gets the small files: result.json (command,
wall time, machine, load), config.json, history.json, metrics.json. Every arm shares width, batch,
seed, epochs and machine; each step is `nice -n 5` and no two run at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

COMMON = ["--width", "0.25", "--batch-size", "128", "--lr", "1e-3"]
# "Multi-task as today": the shipped model's loss weights (tuned, race raised to 1.0).
WEIGHTS = ["--loss-weights", "emotion=3.48,gender=8.45,race=1.0,age=1.96"]
TEACH = ["--temperature", "1.0", "--threshold", "0.5"]
DISTILL = ["--distill-weight", "1.0", "--distill-temperature", "1.0"]
SHIPPED = Path(__file__).resolve().parents[3] / "fer_model" / "pretrained"


def arms(data: Path, runs: Path) -> dict[str, tuple[str, list[str], str]]:
    """arm -> (description, `fer-mtl` arguments, dataset it is evaluated on)."""
    mixed, taught = str(data / "mixed"), str(runs / "taught")
    balanced = ["--dataset", mixed, *WEIGHTS, "--balanced-batches"]
    student = ["--dataset", taught, *WEIGHTS, "--balanced-batches", *DISTILL]
    teachers = ["--teacher", f"emotion={runs / 'a_single_task'}",
                *[x for t in ("gender", "race", "age") for x in ("--teacher", f"{t}={runs / 'teacher_agr'}")]]
    return {
        "a_single_task": ("single-task emotion (FER2013 faces only)",
                          ["train", "--dataset", str(data / "fer"), "--tasks", "emotion"], mixed),
        "teacher_agr": ("teacher: gender/race/age on UTKFace faces only",
                        ["train", "--dataset", str(data / "utk"), "--tasks", "gender,race,age",
                         "--loss-weights", "gender=8.45,race=1.0,age=1.96"], mixed),
        "b_multi_task": ("multi-task as today (plain shuffling, Adam, plateau)",
                         ["train", "--dataset", mixed, *WEIGHTS], mixed),
        "c_balanced": ("(b) + balanced batches", ["train", *balanced], mixed),
        "teach": ("teachers label the training faces: emotion <- (a), gender/race/age <- teacher_agr",
                  ["teach", "--dataset", mixed, "--out", taught, *TEACH, *teachers], ""),
        "d_teachers": ("(c) + teacher soft labels (distillation)", ["train", *student], mixed),
        "e_cosine": ("(d) + cosine decay to 0 (Adam)", ["train", *student, "--schedule", "cosine"], mixed),
        # The 6-epoch emotion teacher is rarely sure of a UTKFace face: no threshold keeps all its targets.
        "teach_t0": ("teach without a confidence threshold",
                     ["teach", "--dataset", mixed, "--out", str(runs / "taught_t0"), "--threshold", "0",
                      *teachers], ""),
        "d_teachers_t0": ("(c) + teacher soft labels, no threshold",
                          ["train", "--dataset", str(runs / "taught_t0"), *WEIGHTS, "--balanced-batches", *DISTILL],
                          mixed),
        # Teachers as good as we have: the shipped four-head model (full training set, 54.6% emotion)
        # labels every face for every task, instead of 6-epoch teachers trained on the subset.
        "teach_shipped": ("the shipped model labels the training faces for all four tasks",
                          ["teach", "--dataset", mixed, "--out", str(runs / "taught_shipped"), *TEACH,
                           *[x for t in ("emotion", "gender", "race", "age") for x in ("--teacher", f"{t}={SHIPPED}")]],
                          ""),
        "f_shipped_teachers": ("(c) + soft labels from the shipped model",
                               ["train", "--dataset", str(runs / "taught_shipped"), *WEIGHTS, "--balanced-batches",
                                *DISTILL], mixed),
        "e_sgd_cosine": ("(d) + SGD-Nesterov lr 0.01 + cosine decay to 0",
                         ["train", *student, "--schedule", "cosine", "--optimizer", "sgd"], mixed),
    }


def machine() -> dict[str, str]:
    cpu = platform.processor()
    flags = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            flags = " ".join(sorted(f for f in line.split(":", 1)[1].split() if f.startswith("avx")))
    return {"cpu": cpu, "avx_flags": flags, "cores": str(os.cpu_count())}


def run_step(name: str, argv: list[str], *, runs: Path, epochs: int, seed: int) -> dict[str, object]:
    cmd = ["nice", "-n", "5", sys.executable, "-m", "fer_cli", *argv]
    if argv[0] == "train":
        cmd += ["--out", str(runs / name), "--epochs", str(epochs), "--seed", str(seed), *COMMON]
        if name == "e_sgd_cosine":
            cmd[cmd.index("--lr") + 1] = "0.01"
    load_before = os.getloadavg()
    started = time.monotonic()
    log = (runs / f"{name}.log").open("w")
    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    return {"command": " ".join(cmd[3:]).replace(sys.executable, "python"), "wall_seconds": round(seconds, 1),
            "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()]}


def evaluate(name: str, dataset: str, *, runs: Path) -> dict[str, object]:
    out = runs / f"{name}_eval"
    cmd = ["nice", "-n", "5", sys.executable, "-m", "fer_cli", "evaluate", "--model", str(runs / name),
           "--dataset", dataset, "--out", str(out), "--split", "test"]
    started = time.monotonic()
    subprocess.run(cmd, check=True, stdout=(runs / f"{name}_eval.log").open("w"), stderr=subprocess.STDOUT)
    return {"eval_command": " ".join(cmd[3:]).replace(sys.executable, "python"),
            "eval_seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", type=Path)
    parser.add_argument("results", type=Path)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated arms (default: all, in order)")
    parser.add_argument("--suffix", default="", help="appended to result folder names (e.g. _seed1)")
    args = parser.parse_args()
    args.runs.mkdir(parents=True, exist_ok=True)
    plan = arms(args.data, args.runs)
    chosen = [a for a in plan if not args.only or a in args.only.split(",")]
    for name in chosen:
        description, argv, eval_on = plan[name]
        row: dict[str, object] = {"arm": name + args.suffix, "description": description, "epochs": args.epochs,
                                  "seed": args.seed, "machine": machine()}
        row.update(run_step(name, argv, runs=args.runs, epochs=args.epochs, seed=args.seed))
        dest = args.results / (name + args.suffix)
        dest.mkdir(parents=True, exist_ok=True)
        if eval_on:
            row.update(evaluate(name, eval_on, runs=args.runs))
            # A teacher has no emotion head; committed metrics.json files are expected to have one.
            tasks = argv[argv.index("--tasks") + 1].split(",") if "--tasks" in argv else ["emotion"]
            kept = "metrics.json" if "emotion" in tasks else "teacher_metrics.json"
            shutil.copy(args.runs / f"{name}_eval" / "metrics.json", dest / kept)
            for f in ("config.json", "history.json"):
                shutil.copy(args.runs / name / f, dest / f)
        else:
            taught = argv[argv.index("--out") + 1]
            shutil.copy(Path(taught) / "manifest.json", dest / "taught_manifest.json")
        (dest / "result.json").write_text(json.dumps(row, indent=2) + "\n")
        print(f"{name}: {row['wall_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
