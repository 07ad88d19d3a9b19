"""The prepared GPU scripts (experiments/gpu, experiments/real_faces/run_gpu.sh) work before a GPU is at hand.

They run on a machine without TensorFlow (KERAS_BACKEND=jax); here they are checked with the suite's
own backend: the shell scripts parse, the entry points answer --help, the student's `fer-mtl train`
flags build the settings the script records, the epoch sizing and checkpoint parts hold, and an
interrupted student's checkpoint becomes a model artifact with its weights.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "experiments" / "gpu"
REAL_FACES = ROOT / "experiments" / "real_faces"
SCRIPTS = [GPU / "run_gpu_bench.sh", GPU / "download_wheels.sh", GPU / "env.sh", REAL_FACES / "run_gpu.sh",
           REAL_FACES / "run_gpu_paper_rows.sh"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up while the class is created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe():
    return _load("recipe_run")


@pytest.fixture(scope="module")
def dry_dataset(tmp_path_factory):
    return _load("dry_pack").dry_dataset(tmp_path_factory.mktemp("dry") / "dataset", n=60, seed=0)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("script", "expected"), [
    ("recipe_run.py", "--budget-s"),
    ("bench_training_gpu.py", "--settings"),
    ("dry_pack.py", "--n"),
])
def test_entry_points_answer_help(script: str, expected: str) -> None:
    done = subprocess.run([sys.executable, str(GPU / script), "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


def test_student_flags_build_the_recorded_settings(recipe, tmp_path: Path) -> None:
    """What `fer-mtl train` parses from the flags is what result.json records (and an export rebuilds)."""
    from fer_cli import build_parser
    from fer_model._settings import parse_loss_weights

    args = recipe.parse_args([str(tmp_path / "pack.npz"), str(tmp_path / "out")])
    settings = recipe.student_settings(args, epochs=40)
    flags = recipe.student_flags(settings, dataset_dir=tmp_path / "d", model_dir=tmp_path / "m", width=args.width)
    parsed = build_parser().parse_args(flags)
    assert parsed.width == args.width
    for name, value in settings.items():
        got = parse_loss_weights(parsed.loss_weights, name="w") if name == "loss_weights" else getattr(parsed, name)
        assert got == value, name
    assert settings["schedule"] == "cosine" and settings["balanced_batches"]
    assert settings["early_stopping_patience"] == 40


def test_epochs_are_sized_to_the_budget(recipe) -> None:
    sized = dict(images=25_856, rate=12_000.0, epoch_overhead_s=1.5, compile_s=60.0, max_epochs=500, min_epochs=3)
    epochs = recipe.size_epochs(seconds=400.0, **sized)
    per_epoch = 25_856 / 12_000 + 1.5
    assert 60 + epochs * per_epoch <= 400 < 60 + (epochs + 1) * per_epoch
    assert recipe.size_epochs(seconds=400.0, **{**sized, "max_epochs": 20}) == 20
    assert recipe.size_epochs(seconds=10.0, **sized) == 3


def test_balanced_epoch_reads_as_many_images_as_emotion_has_labels(recipe, dry_dataset: Path) -> None:
    split = np.load(dry_dataset / "split.npy")
    emotion = np.load(dry_dataset / "labels.npz")["emotion"][split == 0]
    labelled = int((emotion != -1).sum())
    assert recipe.images_per_epoch(dry_dataset, batch_size=8, balanced=True) == -(-labelled // 8) * 8
    assert recipe.images_per_epoch(dry_dataset, batch_size=8, balanced=False) == -(-int((split == 0).sum()) // 8) * 8


def test_only_tasks_without_soft_labels_are_taught(recipe, tmp_path: Path) -> None:
    manifest = {"soft_labels": {"gender": {}, "race": {}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    args = recipe.parse_args(["p", "o", "--teacher", "/t"])
    assert recipe.teacher_flags(args, tmp_path, None) == ["--teacher", "emotion=/t", "--teacher", "age=/t"]
    assert recipe.teacher_flags(args, tmp_path, Path("/e"))[:2] == ["--teacher", "emotion=/e"]


def test_checkpoint_parts_round_trip_and_a_bad_copy_is_refused(recipe, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(recipe, "PART_BYTES", 100)
    source = tmp_path / "checkpoint.npz"
    np.savez(source, meta=np.frombuffer(json.dumps({"epochs_done": 3, "finished": False}).encode(), np.uint8),
             w=np.arange(60, dtype=np.float32))
    out = tmp_path / "out"
    out.mkdir()
    record = recipe.write_parts(source, out)
    assert len(record["parts"]) == -(-source.stat().st_size // 100) and record["epochs_done"] == 3
    recipe.join_parts(out, record, tmp_path / "again" / "checkpoint.npz")
    assert (tmp_path / "again" / "checkpoint.npz").read_bytes() == source.read_bytes()
    (out / record["parts"][-1]).write_bytes(b"cut")
    with pytest.raises(SystemExit, match="sha256"):
        recipe.join_parts(out, record, tmp_path / "bad.npz")


@pytest.mark.slow
def test_an_interrupted_students_checkpoint_becomes_its_model_artifact(recipe, dry_dataset: Path,
                                                                        tmp_path: Path) -> None:
    """One epoch with a checkpoint; the export holds exactly the checkpoint's weights and loads."""
    import keras

    from fer_model.checkpoint import CHECKPOINT_FILE
    from fer_model.dataset import load_dataset
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig, fit

    args = recipe.parse_args(["p", "o", "--width", "0.25", "--batch-size", "8", "--warmup-epochs", "1",
                              "--no-mixed-precision"])
    settings = {**recipe.student_settings(args, epochs=2), "verbose": 0}
    fit(load_dataset(dry_dataset), model_config=ModelConfig(width=0.25), train_config=TrainConfig(**settings),
        checkpoint_dir=tmp_path / "checkpoint")
    checkpoint = tmp_path / "checkpoint" / CHECKPOINT_FILE
    exported = recipe.export_checkpoint(checkpoint, dry_dataset, tmp_path / "artifact", width=0.25, settings=settings)
    model = keras.saving.load_model(exported / "model.keras")
    with np.load(checkpoint) as npz:
        first_kernel = npz["model/0"]
    np.testing.assert_array_equal(model.variables[0].numpy(), first_kernel)
    assert json.loads((exported / "config.json").read_text())["training"]["schedule"] == "cosine"

    # finalize.py turns a returned run folder (result.json, model/) into an artifact that loads and verifies.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    exported.rename(run_dir / "model")
    (run_dir / "result.json").write_text(json.dumps({"description": "dry run"}))
    done = subprocess.run([sys.executable, str(REAL_FACES / "finalize.py"), str(run_dir),
                           str(run_dir / "model" / "model.keras"), str(dry_dataset), str(tmp_path / "final"),
                           "--no-saved-model"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    from fer_model.model_artifact import load_model_artifact

    assert load_model_artifact(tmp_path / "final").config.training["schedule"] == "cosine"
    assert "Run: dry run" in (tmp_path / "final" / "MODEL_CARD.md").read_text()


@pytest.mark.slow
def test_bench_smoke_writes_its_figures(tmp_path: Path) -> None:
    """The GPU bench's tiny run under the suite's backend: both recipes measured, the JSON written."""
    done = subprocess.run([sys.executable, str(GPU / "bench_training_gpu.py"), "--smoke", "--settings", "8:float32",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    body = json.loads((tmp_path / "training_gpu_smoke.json").read_text())
    rate, first = body["figures"]
    assert rate["unit"] == "images/s" and rate["value"] > 0 and rate["baseline_value"] > 0
    assert first["unit"] == "s" and first["value"] > 0
