"""CLI error paths: each exits 2 with one stderr error line and no traceback.

Run in-process through `fer_cli.main` (fast); one subprocess test covers the real console script.
None of these cases trains a model: the artifacts are small hand-made folders.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_cli import build_parser, main
from fer_model.dataset import write_dataset
from fer_model.tasks import TASK_NAMES, get_task


def _config(**overrides):
    config = {
        "format": "fer-mtl-model",
        "format_version": 1,
        "library_version": "0.1.0",
        "keras_version": "3",
        "backend": "tensorflow",
        "tasks": {t: list(get_task(t).classes) for t in TASK_NAMES},
        "input_size": 50,
        "input_name": "image",
        "alignment": {},
        "model": {},
        "training": {},
        "loss_weights": {t: 1.0 for t in TASK_NAMES},
        "dataset_manifest_sha256": "0" * 64,
        "best_epoch": 0,
        "epochs_run": 1,
        "validation": {},
        "saved_model": None,
    }
    return {**config, **overrides}


def _write_dataset(path, splits):
    n = len(splits)
    labels = {t: np.zeros(n, np.int8) for t in TASK_NAMES}
    return write_dataset(path, images=np.zeros((n, 50, 50), np.uint8), labels=labels, split=np.array(splits))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """Named inputs the error cases point at: each is wrong in exactly one way."""
    root = tmp_path_factory.mktemp("cli")
    p = {"missing": root / "does_not_exist", "out": root / "out", "journal": root / "study.journal"}
    p["dataset"] = _write_dataset(root / "dataset", [0, 1, 2, 2])
    p["train_only"] = _write_dataset(root / "train_only", [0, 0, 0])
    # A model folder whose config.json is fine but whose model.keras is not a Keras file.
    p["corrupt_model"] = root / "corrupt_model"
    p["corrupt_model"].mkdir()
    (p["corrupt_model"] / "config.json").write_text(json.dumps(_config()))
    (p["corrupt_model"] / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    p["old_model"] = root / "old_model"
    p["old_model"].mkdir()
    (p["old_model"] / "config.json").write_text(json.dumps(_config(format_version=0)))
    p["foreign_labels"] = root / "foreign_labels"
    p["foreign_labels"].mkdir()
    (p["foreign_labels"] / "config.json").write_text(json.dumps(_config(tasks={"emotion": ["happy", "sad"]})))
    p["garbage_jpg"] = root / "garbage.jpg"
    p["garbage_jpg"].write_bytes(b"this is not a jpeg" * 10)
    p["empty_png"] = root / "empty.png"
    p["empty_png"].write_bytes(b"")
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    p["truncated_jpg"] = root / "truncated.jpg"
    p["truncated_jpg"].write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    p["face_png"] = root / "face.png"
    p["face_png"].write_bytes(cv2.imencode(".png", np.full((80, 80), 200, np.uint8))[1].tobytes())
    p["dir_jpg"] = root / "dir.jpg"
    p["dir_jpg"].mkdir()
    return p


# (argv with {name} placeholders for `paths`, regex the single error line must match)
FER_ERRORS = {
    "evaluate-missing-model": ("evaluate --model {missing} --dataset {dataset} --out {out}", "does not exist"),
    "evaluate-dataset-as-model": ("evaluate --model {dataset} --dataset {dataset} --out {out}",
                                  "not a model artifact"),
    "evaluate-old-model": ("evaluate --model {old_model} --dataset {dataset} --out {out}", "format version 0"),
    "evaluate-foreign-labels": ("evaluate --model {foreign_labels} --dataset {dataset} --out {out}", "label order"),
    "evaluate-missing-dataset": ("evaluate --model {corrupt_model} --dataset {missing} --out {out}",
                                 "manifest.json is missing"),
    "evaluate-model-as-dataset": ("evaluate --model {corrupt_model} --dataset {corrupt_model} --out {out}",
                                  "not a dataset artifact"),
    "evaluate-empty-split": ("evaluate --model {corrupt_model} --dataset {train_only} --out {out}",
                             r"split 'test'.*empty.*train 3, validation 0, test 0"),
    "evaluate-corrupt-model": ("evaluate --model {corrupt_model} --dataset {dataset} --out {out}",
                               "model.keras is not a readable Keras 3 .keras archive"),
    "evaluate-batch-size": ("evaluate --model {corrupt_model} --dataset {dataset} --out {out} --batch-size 0",
                            "--batch-size must be >= 1"),
    "predict-missing-image": ("predict {missing}", "does not exist"),
    "predict-directory": ("predict {dir_jpg}", "does not exist or is not a file"),
    "predict-garbage": ("predict {garbage_jpg}", "garbage.jpg: not a recognised image format"),
    "predict-empty-file": ("predict {empty_png}", "empty.png: image data is empty"),
    "predict-truncated": ("predict {truncated_jpg}", "truncated.jpg: .*truncated"),
    "predict-second-image-bad": ("predict {truncated_jpg} {garbage_jpg}", "truncated.jpg"),
    "predict-missing-model": ("predict {face_png} --model {missing}", "does not exist"),
    "predict-dataset-as-model": ("predict {face_png} --model {dataset}", "not a model artifact"),
    "predict-corrupt-model": ("predict {face_png} --model {corrupt_model}",
                              "model.keras is not a readable Keras 3 .keras archive"),
    "predict-max-faces": ("predict {garbage_jpg} --max-faces 0", "--max-faces must be >= 1"),
    "train-missing-dataset": ("train --dataset {missing} --out {out} --epochs 1", "manifest.json is missing"),
    "train-bad-tasks": ("train --dataset {dataset} --out {out} --tasks emotion,mood", "unknown task"),
    "train-bad-loss-weights": ("train --dataset {dataset} --out {out} --loss-weights emotion=x", "not a number"),
    "train-bad-width": ("train --dataset {dataset} --out {out} --width -1", "`width` must be > 0"),
    "train-bad-dropout": ("train --dataset {dataset} --out {out} --dropout 0.5,0.5", "one rate or four"),
    "train-dropout-not-a-number": ("train --dataset {dataset} --out {out} --dropout high", "one rate or four"),
    "train-dropout-out-of-range": ("train --dataset {dataset} --out {out} --dropout 1.5",
                                   r"`dropout` rates must be in \[0, 1\)"),
    "train-bad-distill-threshold": ("train --dataset {dataset} --out {out} --distill-threshold 2",
                                    r"`distill_threshold` must be in \[0, 1\]"),
    "teach-missing-dataset": ("teach --dataset {missing} --teacher emotion={missing} --out {out}",
                              "manifest.json is missing"),
    "teach-bad-teacher": ("teach --dataset {dataset} --teacher mood={missing} --out {out}", "TASK=MODEL_DIR"),
    "teach-bad-temperature": ("teach --dataset {dataset} --teacher emotion={missing} --out {out} --temperature 0",
                              "`temperature` must be a finite number > 0"),
    "teach-missing-teacher": ("teach --dataset {dataset} --teacher emotion={missing} --out {out}", "does not exist"),
    "teach-dataset-as-teacher": ("teach --dataset {dataset} --teacher emotion={dataset} --out {out}",
                                 "not a model artifact"),
    "sample-data-too-few": ("sample-data --out {out} --n 0", "`n` must be"),
    "prepare-unknown-kind": ("prepare --source bogus:{missing} --out {out}", "unknown source kind 'bogus'"),
    "prepare-no-kind": ("prepare --source {missing} --out {out}", "must look like KIND:PATH"),
    "prepare-missing-source": ("prepare --source fer2013-csv:{missing} --out {out}", "does not exist"),
    "prepare-workers": ("prepare --source rafdb:{missing} --out {out} --workers 0", "--workers must be >= 1"),
    "tune-missing-dataset": ("tune --dataset {missing} --study s --trials 1 --storage {journal}",
                             "manifest.json is missing"),
    "tune-zero-trials": ("tune --dataset {dataset} --study s --trials 0 --storage {journal}", "n_trials"),
    "tune-bad-storage": ("tune --dataset {dataset} --study s --storage bogus://x", "scheme 'bogus' is not supported"),
    "serve-missing-model": ("serve --model {missing}", "does not exist"),
    "serve-dataset-as-model": ("serve --model {dataset}", "not a model artifact"),
    "serve-max-body": ("serve --model {corrupt_model} --max-body-mb 0", "--max-body-mb must be > 0"),
    "pipeline-run-not-local": ("pipeline run --out {out}", "add --local"),
    "pipeline-run-bad-param": ("pipeline run --local -p foo --out {out}", "NAME=VALUE"),
    "pipeline-submit-no-host": ("pipeline submit", "--host is required"),
    "pipeline-compile-unwritable": ("pipeline compile --out {garbage_jpg}/pipeline.yaml",
                                    "cannot write the compiled pipeline to .*garbage.jpg"),
    "demo-bad-param": ("demo -p foo --out {out}", "NAME=VALUE"),
    "deploy-local-storage-uri": ("deploy --storage-uri {missing} --dry-run", "`storage_uri` must be a URI"),
    "deploy-bad-name": ("deploy --storage-uri gs://b/m --name Bad_Name --dry-run", "`name` must be a lowercase DNS"),
    "experiment-unknown-run": ("experiment run --dataset {dataset} --out {out} --runs bogus", "unknown run"),
    "experiment-tuned-without-params": ("experiment run --dataset {dataset} --out {out} --runs multi_task_tuned",
                                        "needs --tuned"),
    "experiment-missing-tuned": ("experiment run --dataset {dataset} --out {out} --tuned {missing}",
                                 "cannot read best parameters"),
    "experiment-table-no-results": ("experiment table --out {missing}", "no result.json"),
}

ARGPARSE_ERRORS = {
    "unknown-command": ("frobnicate", "invalid choice"),
    "evaluate-no-model-flag": ("evaluate --dataset {dataset} --out {out}", "--model"),
    "evaluate-bad-split": ("evaluate --model {missing} --dataset {dataset} --out {out} --split dev", "invalid choice"),
    "evaluate-batch-size-not-int": ("evaluate --model {missing} --dataset {dataset} --out {out} --batch-size x",
                                    "invalid int"),
    "evaluate-unknown-flag": ("evaluate --model {missing} --dataset {dataset} --out {out} --frobnicate",
                              "unrecognized arguments"),
    "predict-no-image": ("predict", "IMAGE"),
    "predict-max-faces-not-int": ("predict {garbage_jpg} --max-faces many", "invalid int"),
    "train-no-out": ("train --dataset {dataset}", "--out"),
    "teach-no-teacher": ("teach --dataset {dataset} --out {out}", "--teacher"),
    "prepare-no-source": ("prepare --out {out}", "--source"),
    "tune-no-storage": ("tune --dataset {dataset} --study s", "--storage"),
    "serve-bad-port": ("serve --model {missing} --port x", "invalid int"),
    "pipeline-no-action": ("pipeline", "ACTION"),
    "demo-bad-seed": ("demo --seed x", "invalid int"),
    "sample-data-no-out": ("sample-data", "--out"),
    "experiment-no-action": ("experiment", "required"),
    "deploy-no-storage-uri": ("deploy --dry-run", "--storage-uri"),
}


def _commands():
    """Subcommand names the CLI registers now."""
    parser = build_parser()
    return set(next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices)


def _argv(template, paths):
    return [arg.format(**{k: str(v) for k, v in paths.items()}) for arg in template.split()]


@pytest.fixture(autouse=True)
def _no_cluster_env(monkeypatch):
    # `pipeline submit` falls back to this variable; the error case needs it unset.
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)


def test_every_command_has_error_cases():
    cases = (*FER_ERRORS.values(), *ARGPARSE_ERRORS.values())
    # A case is (template, match) or a pytest.param carrying them in `.values`.
    covered = {getattr(case, "values", case)[0].split()[0] for case in cases}
    assert _commands() <= covered, f"add error cases for {sorted(_commands() - covered)}"


@pytest.mark.timeout(120)  # a case whose check regressed must not start a server or a long run
@pytest.mark.parametrize(("template", "match"), FER_ERRORS.values(), ids=FER_ERRORS.keys())
def test_fer_errors_are_one_line_exit_2(template, match, paths, capsys):
    argv = _argv(template, paths)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"fer-mtl {argv[0]}: error: ")
    assert re.search(match, lines[0]), lines[0]
    assert "Traceback" not in captured.err
    if argv[0] in ("evaluate", "predict"):
        assert captured.out == ""  # no partial JSON or summary before the error


@pytest.mark.parametrize(("template", "match"), ARGPARSE_ERRORS.values(), ids=ARGPARSE_ERRORS.keys())
def test_bad_flags_exit_2_with_one_error_line(template, match, paths, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_argv(template, paths))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    # argparse prints its usage above the error; the error itself is one line.
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1 and match in errors[0], err
    assert "Traceback" not in err


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_failed_evaluate_leaves_no_partial_output(paths, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(_argv(f"evaluate --model {{corrupt_model}} --dataset {{dataset}} --out {out}", paths)) == 2
    assert not (out / "metrics.json").exists()


def test_console_script_corrupt_image(paths):
    script = Path(sys.executable).with_name("fer-mtl")
    result = subprocess.run([str(script), "predict", str(paths["garbage_jpg"])], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"fer-mtl predict: error: image {paths['garbage_jpg']}: not a recognised image format")


def test_dropout_flag_takes_one_rate_or_four():
    from fer_cli.train import parse_dropout

    assert parse_dropout("0.25") == (0.25, 0.25, 0.25, 0.25)
    assert parse_dropout("0.6,0.5,0.4,0.3") == (0.6, 0.5, 0.4, 0.3)


@pytest.mark.parametrize(
    ("argv", "settings", "fields"),
    [
        (["train", "--dataset", "d", "--out", "o"], "TrainConfig",
         ("epochs", "batch_size", "learning_rate", "seed", "label_smoothing", "mixed_precision", "class_weighting")),
        (["train", "--dataset", "d", "--out", "o"], "ModelConfig", ("width", "augment")),
        (["tune", "--dataset", "d", "--storage", "s", "--study", "x"], "TuneConfig",
         ("n_trials", "objective", "pruner", "epochs", "width", "seed", "timeout")),
        (["experiment", "run", "--dataset", "d", "--out", "o"], "TrainConfig",
         ("epochs", "batch_size", "learning_rate", "seed", "label_smoothing", "mixed_precision")),
    ],
)
def test_flag_defaults_are_the_settings_defaults(argv, settings, fields):
    """Flags read their defaults from the dataclass, so the CLI and the library cannot disagree."""
    from fer_model._settings import field_default
    from fer_model.model import ModelConfig
    from fer_model.training import TrainConfig
    from fer_model.tuning import TuneConfig

    cls = {"TrainConfig": TrainConfig, "ModelConfig": ModelConfig, "TuneConfig": TuneConfig}[settings]
    args = build_parser().parse_args(argv)
    assert {f: getattr(args, f) for f in fields} == {f: field_default(cls, f) for f in fields}
