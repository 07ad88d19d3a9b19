"""What one pass per teacher saves: `fer-mtl teach` with one four-head model teaching three tasks, measured.

The common case on FER2013 + UTKFace: one four-head model gives gender, race and age targets to the
emotion-only faces. Both sides label the same faces with the same model and write a taught dataset:
- baseline: one `teach` call per task, each loading the model and running it over the faces (what
  `teach` did per task before it grouped tasks by teacher; each call also reads and writes the dataset,
  which the old single call did once: small beside the forward passes at full size, not at --quick);
- ours: one `teach` call with the three teachers, which loads the model once and reads the three
  heads from one forward pass per batch.
Reported: wall time of each side and whether their targets agree. The model is untrained (the work
does not depend on its weights), the faces are generated, and half of them lack the three labels.

Run: python benchmarks/bench_teaching.py [--quick] [--n 4000] [--width 1.0] [--flip-average]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from _machine import Figure, Run  # noqa: E402
from _models import untrained_artifact  # noqa: E402

from fer_model.dataset import load_dataset, write_dataset  # noqa: E402
from fer_model.records import SPLIT_CODES  # noqa: E402
from fer_model.tasks import MISSING, TASKS  # noqa: E402
from fer_model.teachers import TeachConfig, teach  # noqa: E402

TAUGHT = ("gender", "race", "age")


def make_dataset(root: Path, *, n: int, seed: int) -> Path:
    """`n` random 50x50 train faces: the first half with every label, the second with emotion only."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 50, 50), dtype=np.uint8)
    labels = {t.name: rng.integers(0, t.num_classes, size=n).astype(np.int8) for t in TASKS}
    for task in TAUGHT:
        labels[task][n // 2:] = MISSING
    split = np.full(n, SPLIT_CODES["train"], dtype=np.uint8)
    return write_dataset(root / "dataset", images=images, labels=labels, split=split)


def time_teach(dataset: Path, out: Path, teachers: dict[str, Path], config: TeachConfig) -> float:
    start = time.perf_counter()
    teach(dataset_dir=dataset, teachers=teachers, out_dir=out, config=config)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 faces at width 0.25")
    parser.add_argument("--n", type=int, default=4000, help="faces (default: %(default)s)")
    parser.add_argument("--width", type=float, default=1.0, help="teacher width (default: %(default)s)")
    parser.add_argument("--flip-average", action="store_true", help="teach with flip averaging")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="result file stem (default: teaching, teaching_quick)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.width = 1000, 0.25

    run = Run(args.name or ("teaching_quick" if args.quick else "teaching"), vars(args))
    config = TeachConfig(flip_average=args.flip_average)
    with tempfile.TemporaryDirectory(prefix="bench-teaching-") as tmp:
        root = Path(tmp)
        dataset = make_dataset(root, n=args.n, seed=args.seed)
        teacher = untrained_artifact(root / "teacher", width=args.width)
        # Warm the file cache and TensorFlow's kernels outside both timings.
        teach(dataset_dir=dataset, teachers={"gender": teacher}, out_dir=root / "warm", config=config)
        base_s, last = 0.0, dataset
        for task in TAUGHT:  # each call adds its task to the dataset the previous one wrote
            base_s += time_teach(last, root / f"base_{task}", {task: teacher}, config)
            last = root / f"base_{task}"
        ours_s = time_teach(dataset, root / "ours", {task: teacher for task in TAUGHT}, config)
        base, ours = load_dataset(last), load_dataset(root / "ours")
        agree = all(np.allclose(base.soft_labels[t], ours.soft_labels[t], atol=1e-5, equal_nan=True) for t in TAUGHT)
    faces = args.n - args.n // 2
    print(f"{faces} faces x {len(TAUGHT)} tasks, width {args.width}, flip average {args.flip_average}: "
          f"one call per task {base_s:.1f} s, one call {ours_s:.1f} s, targets agree: {agree}")
    if not agree:
        raise SystemExit("the two ways of teaching gave different targets")
    run.add(Figure(f"teach {', '.join(TAUGHT)} from one model, {faces} faces", ours_s, "s",
                   baseline="one teach call per task", baseline_value=base_s, higher_is_better=False))
    run.write()


if __name__ == "__main__":
    main()
