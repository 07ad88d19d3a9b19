"""Train the four-head model to ship in one GPU call: teacher soft labels, then the student at paper width.

    python experiments/gpu/recipe_run.py PACK OUT [--budget-s 540] [--epochs 0] [--width 1.0] ...

PACK is a dataset pack (`fer_model.dataset_pack`) of FER2013 + UTKFace, or a dataset artifact folder.
Steps, each timed into OUT/result.json the moment it ends:
  1. unpack the pack;
  2. optionally (--teacher-epochs N) train a single-task emotion teacher at the student's width;
  3. `fer-mtl teach`: soft labels for every task the dataset has none for yet (a pack made from a
     taught dataset brings its own), from --teacher (the shipped four-head model by default), and for
     emotion from the teacher of step 2 when there is one;
  4. `fer-mtl train` of the student with issue 13's recipe: balanced batches, distillation,
     cosine decay after a warm-up, BatchNorm recalibration (on by default), an epoch checkpoint;
     its epoch count is sized to what is left of --budget-s unless --epochs is given;
  5. `fer-mtl evaluate` on the test split, into result.json.

The script keeps its own deadline (--budget-s from its start) so it ends, results written, before
the device call's limit. What comes back from that machine is capped (8 files, 16 MiB each, two
folders down), so OUT holds at most: log.txt, result.json, model/{model.keras,config.json,
history.json} and, while the student trains or if it was cut short, its checkpoint in parts
(checkpoint.npz.00, .01, ...; removed once the student finishes). An interrupted student still
leaves a model artifact (its last epoch's weights) and is continued by --resume-from with the
returned files, on the GPU or with `fer-mtl train --resume` on any machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TASKS = ("emotion", "gender", "race", "age")
#: The shipped model's loss weights (tuned, race raised to 1.0; experiments/real_faces/README.md).
LOSS_WEIGHTS = "emotion=3.48,gender=8.45,race=1.0,age=1.96"
#: Issue 13's bar for the model to ship: emotion on FER2013 PublicTest, the rest on held-out UTKFace.
TARGETS = {"emotion": 0.62, "gender": 0.90, "race": 0.85, "age": 0.72}
CHECKPOINT = "checkpoint.npz"
#: Parts of the checkpoint copied to OUT: below the 16 MiB a returned file may have.
PART_BYTES = 15 * 2**20
RESULT = "result.json"


@dataclasses.dataclass
class Clock:
    """The run's deadline, and how long each step took."""

    budget_s: float
    start: float = dataclasses.field(default_factory=time.monotonic)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)


class Report:
    """OUT/result.json, rewritten (atomically) after every step so a killed call still returns it."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.path = out / RESULT
        machine = _machine()
        # "environment" and "description" are what the model card (fer_model.model_card) reads from it.
        self.body: dict[str, Any] = {"status": "running", "run": "gpu_recipe", "settings": settings,
                                     "environment": {"backend": machine["keras_backend"], "device": machine["gpu"],
                                                     "machine": f"{machine['host']}, {machine['cpus']} CPUs"},
                                     "machine": machine, "steps": {}}
        self.lock = threading.Lock()
        self.write()

    def step(self, name: str, **fields: Any) -> None:
        with self.lock:
            self.body["steps"].setdefault(name, {}).update(fields)
        self.write()

    def set(self, **fields: Any) -> None:
        with self.lock:
            self.body.update(fields)
        self.write()

    def write(self) -> None:
        with self.lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(json.dumps(self.body, indent=2, default=str) + "\n")
            os.replace(tmp, self.path)


def _machine() -> dict[str, Any]:
    gpu = shutil.which("nvidia-smi")
    name = None
    if gpu:
        done = subprocess.run([gpu, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                              check=False)
        name = done.stdout.strip() or None
    return {"host": socket.gethostname(), "gpu": name, "cpus": os.cpu_count(),
            "keras_backend": os.environ.get("KERAS_BACKEND"), "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_cli(args: Sequence[str], *, log: Path, timeout_s: float) -> tuple[int, float]:
    """`python -m fer_cli ARGS`, its output into `log` and ours; killed after `timeout_s`. Returns (rc, seconds)."""
    command = [sys.executable, "-m", "fer_cli", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(command)}\n")
        sink.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                cwd=ROOT)
        timer = threading.Timer(max(1.0, timeout_s), _stop, args=(proc, sink))
        timer.start()
        try:
            for line in proc.stdout or ():
                sink.write(line)
                sink.flush()
                print(line, end="", flush=True)
            rc = proc.wait()
        finally:
            timer.cancel()
    return rc, round(time.monotonic() - started, 1)


def _stop(proc: subprocess.Popen[str], sink: Any) -> None:
    sink.write("[recipe_run] deadline reached: stopping the step\n")
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def prepare_data(pack: Path, work: Path, report: Report) -> Path:
    """The dataset artifact to train on: `pack` itself if it is a folder, else its unpacked copy."""
    if pack.is_dir():
        return pack
    from fer_model.dataset_pack import unpack_dataset

    started = time.monotonic()
    out = unpack_dataset(pack, work / "aligned")
    report.step("unpack", seconds=round(time.monotonic() - started, 1), pack=str(pack),
                pack_bytes=pack.stat().st_size)
    return out


def soft_label_tasks(dataset_dir: Path) -> list[str]:
    """Tasks the dataset artifact already carries teacher soft labels for."""
    manifest = json.loads((dataset_dir / "manifest.json").read_text())
    return sorted(manifest.get("soft_labels") or {})


def teacher_flags(args: argparse.Namespace, dataset_dir: Path, emotion_teacher: Path | None) -> list[str]:
    """`--teacher TASK=DIR` for every task to teach: those without soft labels, and emotion if a teacher was trained."""
    have = set(soft_label_tasks(dataset_dir))
    flags: list[str] = []
    for task in TASKS:
        if task == "emotion" and emotion_teacher is not None:
            flags += ["--teacher", f"emotion={emotion_teacher}"]
        elif task not in have:
            flags += ["--teacher", f"{task}={args.teacher}"]
    return flags


def train_emotion_teacher(args: argparse.Namespace, dataset_dir: Path, work: Path, clock: Clock,
                          report: Report) -> Path | None:
    """Step 2: a single-task emotion teacher at the student's width (None when --teacher-epochs is 0 or it failed)."""
    if args.teacher_epochs <= 0:
        return None
    out = work / "teacher_emotion"
    flags = ["train", "--dataset", str(dataset_dir), "--out", str(out), "--tasks", "emotion",
             "--epochs", str(args.teacher_epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
             "--width", str(args.width), "--balanced-batches", "--schedule", "cosine",
             "--warmup-epochs", str(min(args.warmup_epochs, args.teacher_epochs - 1)), "--seed", str(args.seed),
             # True labels only: soft emotion labels the pack may carry come from the teacher it replaces.
             "--distill-weight", "0", *(["--mixed-precision"] if args.mixed_precision else [])]
    rc, seconds = run_cli(flags, log=args.out / "log.txt", timeout_s=clock.left() - args.reserve_s)
    report.step("teacher_emotion", rc=rc, seconds=seconds, command=flags)
    return out if rc == 0 else None


def teach(args: argparse.Namespace, dataset_dir: Path, emotion_teacher: Path | None, work: Path, clock: Clock,
          report: Report) -> Path:
    """Step 3: the dataset with teacher soft labels for every task (the input itself if it has them all)."""
    teachers = teacher_flags(args, dataset_dir, emotion_teacher)
    if not teachers:
        report.step("teach", skipped="the dataset carries soft labels for every task",
                    soft_label_tasks=soft_label_tasks(dataset_dir))
        return dataset_dir
    out = work / "taught"
    flags = ["teach", "--dataset", str(dataset_dir), "--out", str(out), "--temperature", str(args.temperature),
             "--threshold", str(args.threshold), *teachers]
    rc, seconds = run_cli(flags, log=args.out / "log.txt", timeout_s=clock.left() - args.reserve_s)
    report.step("teach", rc=rc, seconds=seconds, command=flags)
    if rc != 0:
        raise SystemExit(f"fer-mtl teach failed (exit {rc}); see {args.out / 'log.txt'}")
    return out


def images_per_epoch(dataset_dir: Path, *, batch_size: int, balanced: bool) -> int:
    """Training images one student epoch reads (as `fer_model.batching.plan_batches` plans them)."""
    import numpy as np

    split = np.load(dataset_dir / "split.npy", mmap_mode="r")
    train = np.asarray(split) == 0
    if not balanced:
        return math.ceil(int(train.sum()) / batch_size) * batch_size
    with np.load(dataset_dir / "labels.npz") as labels:
        emotion = np.asarray(labels["emotion"])[train]
    return math.ceil(max(int((emotion != -1).sum()), 1) / batch_size) * batch_size


def size_epochs(*, seconds: float, images: int, rate: float, epoch_overhead_s: float, compile_s: float,
                max_epochs: int, min_epochs: int) -> int:
    """Epochs that fit in `seconds` at `rate` images/s plus a fixed cost per epoch and one compilation."""
    per_epoch = images / rate + epoch_overhead_s
    fits = math.floor((seconds - compile_s) / per_epoch)
    return max(min_epochs, min(max_epochs, fits))


def student_settings(args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    """The student's `TrainConfig` fields: issue 13's recipe at the sizes of `args`."""
    weights = {k: float(v) for k, v in (pair.split("=") for pair in args.loss_weights.split(","))}
    return {"epochs": epochs, "batch_size": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
            "loss_weights": weights, "balanced_batches": True, "distill_weight": args.distill_weight,
            "distill_temperature": args.temperature, "schedule": "cosine", "warmup_epochs": args.warmup_epochs,
            # A cosine run gains most in its last, low-rate epochs: no early stop (the best epoch is kept anyway).
            "early_stopping_patience": epochs, "mixed_precision": args.mixed_precision}


def student_flags(settings: dict[str, Any], *, dataset_dir: Path, model_dir: Path, width: float) -> list[str]:
    """`fer-mtl train` flags for `settings` (flag names as `fer_cli._flags` derives them from the fields)."""
    flags = ["train", "--dataset", str(dataset_dir), "--out", str(model_dir), "--width", str(width)]
    for name, value in settings.items():
        flag = "--lr" if name == "learning_rate" else "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag] if value else []
        elif isinstance(value, dict):
            flags += [flag, ",".join(f"{k}={v}" for k, v in value.items())]
        else:
            flags += [flag, str(value)]
    return flags


class CheckpointMirror(threading.Thread):
    """Copies the student's epoch checkpoint into OUT in parts whenever it changes, so a killed call returns it."""

    def __init__(self, source: Path, out: Path, report: Report, every_s: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.source, self.out, self.report, self.every_s = source, out, report, every_s
        self.done = threading.Event()
        self.seen = 0.0

    def run(self) -> None:
        while not self.done.wait(self.every_s):
            self.sync()
        self.sync()

    def sync(self) -> None:
        try:
            mtime = self.source.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self.seen:
            self.seen = mtime
            self.report.set(checkpoint=write_parts(self.source, self.out))

    def stop(self) -> None:
        self.done.set()
        self.join()


def write_parts(source: Path, out: Path) -> dict[str, Any]:
    """`source` split into OUT/checkpoint.npz.NN parts under the returned-file size; its sha256 and epoch."""
    import numpy as np

    data = source.read_bytes()
    for old in out.glob(CHECKPOINT + ".*"):
        old.unlink()
    parts = []
    for i in range(0, len(data), PART_BYTES):
        part = out / f"{CHECKPOINT}.{i // PART_BYTES:02d}"
        part.write_bytes(data[i:i + PART_BYTES])
        parts.append(part.name)
    # From the bytes copied, not the file: training may have replaced it since.
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        meta = json.loads(bytes(npz["meta"]).decode())
    return {"parts": parts, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "epochs_done": meta["epochs_done"], "finished": meta["finished"]}


def join_parts(folder: Path, expected: dict[str, Any], target: Path) -> None:
    """Reassemble a checkpoint written by `write_parts` into `target`, checking its sha256."""
    data = b"".join((folder / name).read_bytes() for name in expected["parts"])
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise SystemExit(f"the checkpoint parts in {folder} do not match the sha256 its {RESULT} records: "
                         "the copy is incomplete; start a fresh run instead of --resume-from")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def train_student(args: argparse.Namespace, dataset_dir: Path, work: Path, clock: Clock, report: Report,
                  previous: dict[str, Any] | None) -> tuple[int, Path]:
    """Step 4: the student, resumed from `previous` (an earlier call's result.json) when given. Returns (rc, dir)."""
    model_dir = work / "student"
    if previous is not None:
        # The earlier call's settings, whatever this call's flags say: the checkpoint only resumes under them.
        settings, width = previous["steps"]["student"]["settings"], previous["steps"]["student"]["width"]
        join_parts(args.resume_from, previous["checkpoint"], model_dir / "checkpoint" / CHECKPOINT)
        return _fit_student(args, settings, width, dataset_dir, model_dir, clock, report, resumed=True)
    if args.epochs:
        epochs = args.epochs
    else:
        images = images_per_epoch(dataset_dir, batch_size=args.batch_size, balanced=True)
        epochs = size_epochs(seconds=clock.left() - args.reserve_s, images=images, rate=args.rate,
                             epoch_overhead_s=args.epoch_overhead_s, compile_s=args.compile_s,
                             max_epochs=args.max_epochs, min_epochs=args.warmup_epochs + 1)
        report.step("student", images_per_epoch=images, sized_by={"rate": args.rate, "seconds": clock.left()})
    return _fit_student(args, student_settings(args, epochs), args.width, dataset_dir, model_dir, clock, report,
                        resumed=False)


def _fit_student(args: argparse.Namespace, settings: dict[str, Any], width: float, dataset_dir: Path,
                 model_dir: Path, clock: Clock, report: Report, *, resumed: bool) -> tuple[int, Path]:
    """`fer-mtl train` of the student, its checkpoint mirrored into OUT while it runs."""
    flags = student_flags(settings, dataset_dir=dataset_dir, model_dir=model_dir, width=width)
    report.step("student", settings=settings, width=width, command=flags, resumed=resumed)
    report.set(description=describe(settings, width=width, taught=soft_label_tasks(dataset_dir)))
    mirror = CheckpointMirror(model_dir / "checkpoint" / CHECKPOINT, args.out, report)
    mirror.start()
    try:
        resume = ["--resume"] if resumed else []
        rc, seconds = run_cli([*flags, *resume], log=args.out / "log.txt", timeout_s=clock.left() - args.reserve_s)
    finally:
        mirror.stop()
    report.step("student", rc=rc, seconds=seconds)
    return rc, model_dir


def describe(settings: dict[str, Any], *, width: float, taught: Sequence[str]) -> str:
    """One line for the model card: what the student is and how it trained."""
    teachers = f"teacher soft labels for {', '.join(taught)}" if taught else "no teacher soft labels"
    return (f"four heads at width {width:g}, {teachers} (distillation weight {settings['distill_weight']:g}), "
            f"balanced source batches, cosine decay over {settings['epochs']} epochs after "
            f"{settings['warmup_epochs']} warm-up, one GPU call (experiments/gpu/recipe_run.py)")


def export_interrupted(model_dir: Path, dataset_dir: Path, report: Report) -> Path | None:
    """A model artifact from the last checkpoint of a student cut short (its last epoch's weights), in a child."""
    checkpoint = model_dir / "checkpoint" / CHECKPOINT
    if not checkpoint.exists():
        return None
    started = time.monotonic()
    student = report.body["steps"]["student"]
    out = model_dir.parent / "student_interrupted"
    command = [sys.executable, str(Path(__file__).resolve()), "export-checkpoint", str(checkpoint), str(dataset_dir),
               str(out), "--width", str(student["width"]), "--settings", json.dumps(student["settings"])]
    done = subprocess.run(command, cwd=ROOT, check=False)
    report.step("export_interrupted", rc=done.returncode, seconds=round(time.monotonic() - started, 1))
    return out if done.returncode == 0 else None


def export_checkpoint(checkpoint: Path, dataset_dir: Path, out_dir: Path, *, width: float,
                      settings: dict[str, Any]) -> Path:
    """The model artifact of `checkpoint`'s last epoch (the student's configs rebuilt from `settings`)."""
    import keras
    import numpy as np

    from fer_model.checkpoint import read_checkpoint
    from fer_model.dataset import load_dataset
    from fer_model.model import ModelConfig, build_model, silence_classes
    from fer_model.train_run import save_fit
    from fer_model.training import FitResult, TrainConfig, monitor_metric, untrained_classes

    model_config, train_config = ModelConfig(width=width), TrainConfig(**settings)
    with np.load(checkpoint, allow_pickle=False) as npz:
        fingerprint = json.loads(bytes(npz["meta"]).decode())["fingerprint"]
    state = read_checkpoint(checkpoint.parent, fingerprint=fingerprint)
    if train_config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_model(model_config)
    if len(model.variables) != len(state.model_variables):
        raise SystemExit(f"{checkpoint} holds {len(state.model_variables)} model variables, a width-{width} model "
                         f"has {len(model.variables)}: pass the student's --width")
    for variable, value in zip(model.variables, state.model_variables, strict=True):
        variable.assign(value)
    dataset = load_dataset(dataset_dir)
    silenced = untrained_classes({t: dataset.labels[t][dataset.indices("train")] for t in model_config.tasks})
    silence_classes(model, silenced)
    # The artifact holds the last epoch's weights, so its best epoch is the last one whatever history says.
    last = len(state.history[monitor_metric(model_config)]) - 1
    result = FitResult(model=model, history=state.history, best_epoch=last, untrained_classes=silenced)
    return save_fit(result, dataset=dataset, out_dir=out_dir, model_config=model_config,
                    train_config=train_config).model_dir


def evaluate(args: argparse.Namespace, model_dir: Path, dataset_dir: Path, work: Path, clock: Clock,
             report: Report) -> None:
    """Step 5: the test-split metrics, whole and against issue 13's targets, into result.json."""
    out = work / "evaluation"
    flags = ["evaluate", "--model", str(model_dir), "--dataset", str(dataset_dir), "--split", "test",
             "--out", str(out)]
    rc, seconds = run_cli(flags, log=args.out / "log.txt", timeout_s=max(30.0, clock.left()))
    report.step("evaluate", rc=rc, seconds=seconds, command=flags)
    if rc != 0:
        return
    metrics = json.loads((out / "metrics.json").read_text())
    targets = {t: {"accuracy": metrics["tasks"][t]["accuracy"], "target": bar,
                   "met": (metrics["tasks"][t]["accuracy"] or 0) >= bar}
               for t, bar in TARGETS.items() if t in metrics["tasks"]}
    report.set(targets=targets, metrics=metrics)


def publish(model_dir: Path, out: Path) -> None:
    """The model artifact's files into OUT/model (those the returned-file limits allow: no SavedModel here)."""
    target = out / "model"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("model.keras", "config.json", "history.json"):
        shutil.copy(model_dir / name, target / name)


def drop_parts(out: Path, report: Report) -> None:
    """A finished student needs no checkpoint: free the returned-file slots its parts took."""
    for part in out.glob(CHECKPOINT + ".*"):
        part.unlink()
    report.set(checkpoint=None)


def run_recipe(args: argparse.Namespace) -> int:
    """Steps 1-5 within the budget; returns 0 once a finished student is evaluated, 3 if cut short, else 1."""
    clock = Clock(args.budget_s)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="fer-recipe-"))
    work.mkdir(parents=True, exist_ok=True)
    previous = json.loads((args.resume_from / RESULT).read_text()) if args.resume_from else None
    report = Report(args.out, {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    try:
        return _run_steps(args, work, clock, report, previous)
    except SystemExit as e:
        report.set(status="failed", error=str(e), seconds=round(clock.budget_s - clock.left(), 1))
        raise
    finally:
        # Everything worth keeping is in OUT by now; a scratch folder of our own goes.
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _run_steps(args: argparse.Namespace, work: Path, clock: Clock, report: Report,
               previous: dict[str, Any] | None) -> int:
    dataset_dir = prepare_data(args.pack, work, report)
    emotion_teacher = train_emotion_teacher(args, dataset_dir, work, clock, report)
    taught = teach(args, dataset_dir, emotion_teacher, work, clock, report)
    rc, model_dir = train_student(args, taught, work, clock, report, previous)
    finished = rc == 0 and (model_dir / "config.json").exists()
    if finished:
        drop_parts(args.out, report)
    else:
        model_dir = export_interrupted(model_dir, taught, report)
    if model_dir is None:
        report.set(status="failed", seconds=round(clock.budget_s - clock.left(), 1))
        return 1
    publish(model_dir, args.out)
    evaluate(args, model_dir, dataset_dir, work, clock, report)
    report.set(status="finished" if finished else "interrupted", seconds=round(clock.budget_s - clock.left(), 1))
    return 0 if finished else 3


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("pack", type=Path, help="dataset pack (.npz) or dataset artifact folder")
    parser.add_argument("out", type=Path, help="results folder (on the GPU machine: $OUT)")
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="seconds from start by which everything is written (keep below the call's timeout)")
    parser.add_argument("--reserve-s", type=float, default=60.0,
                        help="seconds kept back from training for export, evaluation and copying")
    parser.add_argument("--epochs", type=int, default=0, help="student epochs; 0 sizes them to the budget")
    parser.add_argument("--max-epochs", type=int, default=100, help="cap on the sized epoch count (the paper's)")
    # An H200 trained the paper-width layers at 48,877 images/s (batch 256, mixed precision, plain fit);
    # the student's batch 128, validation and balanced batches are assumed to cost well over half of that.
    parser.add_argument("--rate", type=float, default=20000.0,
                        help="assumed student training images/s when sizing epochs (a GPU bench figure)")
    parser.add_argument("--epoch-overhead-s", type=float, default=1.5,
                        help="assumed seconds per epoch beyond training steps (validation, recalibration, checkpoint)")
    parser.add_argument("--compile-s", type=float, default=60.0, help="assumed first-epoch compilation seconds")
    parser.add_argument("--width", type=float, default=1.0, help="student width (1.0: the paper's)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--loss-weights", default=LOSS_WEIGHTS)
    parser.add_argument("--distill-weight", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=1.0, help="teacher and distillation temperature")
    parser.add_argument("--threshold", type=float, default=0.5, help="teacher confidence threshold")
    parser.add_argument("--teacher", type=Path, default=ROOT / "fer_model" / "pretrained",
                        help="model artifact teaching the tasks without soft labels")
    parser.add_argument("--teacher-epochs", type=int, default=0,
                        help="train a single-task emotion teacher for this many epochs first (0: use --teacher)")
    parser.add_argument("--no-mixed-precision", dest="mixed_precision", action="store_false",
                        help="float32 (default: mixed_float16)")
    parser.add_argument("--resume-from", type=Path, default=None,
                        help="folder with an earlier call's result.json and checkpoint.npz.NN parts: "
                        "continue its student")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    # Absolute, since the steps run as child processes in the repository root.
    for name in ("pack", "out", "teacher", "resume_from", "work"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    if args.resume_from is not None and args.teacher_epochs:
        parser.error("--resume-from needs the soft labels the interrupted student trained on: drop --teacher-epochs "
                     "(a retrained teacher would label differently)")
    if args.warmup_epochs < 0 or args.max_epochs <= args.warmup_epochs:
        parser.error("--max-epochs must exceed --warmup-epochs >= 0")
    return args


def parse_export_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recipe_run.py export-checkpoint",
                                     description="a model artifact from a student checkpoint's last epoch")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--width", type=float, required=True)
    parser.add_argument("--settings", type=json.loads, required=True, help="the student's TrainConfig fields (JSON)")
    return parser.parse_args(argv)


def parse_join_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="recipe_run.py join-checkpoint",
                                     description="reassemble a returned checkpoint for `fer-mtl train --resume`")
    parser.add_argument("results", type=Path, help="the returned folder (result.json, checkpoint.npz.NN)")
    parser.add_argument("model_dir", type=Path, help="the --out of the `fer-mtl train --resume` to run")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["join-checkpoint"]:
        args = parse_join_args(argv[1:])
        result = json.loads((args.results / RESULT).read_text())
        if not result.get("checkpoint"):
            raise SystemExit(f"{args.results / RESULT} records no checkpoint: its student finished or never began")
        join_parts(args.results, result["checkpoint"], args.model_dir / "checkpoint" / CHECKPOINT)
        print(" ".join(["fer-mtl", *result["steps"]["student"]["command"], "--resume"]))
        return 0
    if argv[:1] == ["export-checkpoint"]:
        args = parse_export_args(argv[1:])
        print(export_checkpoint(args.checkpoint, args.dataset, args.out, width=args.width, settings=args.settings))
        return 0
    return run_recipe(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
