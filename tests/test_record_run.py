"""The CPU run across sessions (experiments/real_faces/cpu_scratch.sh) and how it is recorded (record_run.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from fer_model.checkpoint import Checkpoint, write_checkpoint

REAL_FACES = Path(__file__).resolve().parents[1] / "experiments" / "real_faces"
TASKS = ("emotion", "gender", "race", "age")


def _history(epochs: int) -> dict[str, list[float]]:
    history = {"loss": [30.0 - e for e in range(epochs)]}
    for i, task in enumerate(TASKS):
        history[f"val_{task}_accuracy"] = [0.3 + 0.1 * i + 0.01 * e for e in range(epochs)]
    return history


def _record(run: Path, log: Path, results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REAL_FACES / "record_run.py"), str(run), str(log), str(results),
         "--code-commit", "abc1234", "--command", "fer-mtl train --epochs 20"],
        capture_output=True, text=True, check=True, timeout=120,
    )


def test_cpu_scratch_script_parses() -> None:
    subprocess.run(["bash", "-n", str(REAL_FACES / "cpu_scratch.sh")], check=True)


def test_a_resumed_run_is_recorded_from_its_checkpoint_and_every_log_it_wrote(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "run" / "checkpoint", Checkpoint(
        epochs_done=3, fingerprint="f", history=_history(3), model_variables=[np.zeros(2, np.float32)],
        callback_counters={"early_stopping": {"best_epoch": 2, "wait": 0}},
    ))
    prefix = "2026-12-02 INFO fer_model.callbacks: "
    log = tmp_path / "train.log"
    log.write_text("\n".join([
        prefix + "epoch 1/20: step 5/252, 0.12 steps/s, epoch ETA 33m06s",
        prefix + "epoch 1/20: 32m35s, loss 30.0000, val_emotion_accuracy 0.3000; at most 19 more, ETA 10h19m",
        prefix + "epoch 2/20: 42s, loss 29.0000, val_emotion_accuracy 0.3100; at most 18 more, ETA 9h50m",
        prefix + "epoch 3/20: step 100/252, 0.17 steps/s, epoch ETA 15m",  # stopped here, then resumed:
        "Epoch 3/20",
        prefix + "epoch 3/20: 1h02m, loss 28.0000, val_emotion_accuracy 0.3200; at most 17 more, ETA 8h",
    ]) + "\n")
    out = _record(tmp_path / "run", log, tmp_path / "results").stdout

    result = json.loads((tmp_path / "results" / "result.json").read_text())
    assert result["status"].startswith("in progress: 3 of 20 epochs done")
    assert result["checkpoint"] == {"epochs_done": 3, "finished": False, "best_epoch": 3}
    assert [e["wall_min"] for e in result["epochs"]] == [32.6, 0.7, 62.0]
    assert [e["val_emotion_accuracy"] for e in result["epochs"]] == [0.3, 0.31, 0.32]
    assert (result["code_commit"], result["command"]) == ("abc1234", "fer-mtl train --epochs 20")
    lines = (tmp_path / "results" / "epochs.log").read_text().splitlines()
    assert lines == ["epoch 1/20: 32m35s, loss 30.0000, val_emotion_accuracy 0.3000",
                     "epoch 2/20: 42s, loss 29.0000, val_emotion_accuracy 0.3100",
                     "epoch 3/20: 1h02m, loss 28.0000, val_emotion_accuracy 0.3200"]
    assert "| 3 | 32.00 | 42.00 / 52.00 / 62.00 | 62.0 |" in out.splitlines()


def test_a_finished_run_is_recorded_from_its_model_artifact(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps(_history(2)))
    (run / "config.json").write_text(json.dumps({"best_epoch": 0}))
    log = tmp_path / "train.log"
    log.write_text("epoch 1/2: 10m00s, loss 30.0000\nepoch 2/2: 10m30s, loss 29.0000\n")
    _record(run, log, tmp_path / "results")
    result = json.loads((tmp_path / "results" / "result.json").read_text())
    assert result["status"] == "finished"
    assert result["checkpoint"] == {"epochs_done": 2, "finished": True, "best_epoch": 1}
    assert [e["wall_min"] for e in result["epochs"]] == [10.0, 10.5]
