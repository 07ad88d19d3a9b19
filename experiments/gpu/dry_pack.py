"""A tiny dataset pack shaped like FER2013 + UTKFace, for dry runs of the GPU scripts on any machine.

    python experiments/gpu/dry_pack.py OUT.npz [--n 240] [--seed 0]

Random 50x50 faces: the first half labelled for emotion only (like FER2013), the second for gender,
race and age only (like UTKFace; a fifth of them without race), split 70/15/15. It checks plumbing
(two balanced-batch pools, teachers filling each source's missing tasks), not accuracy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fer_model.dataset import write_dataset  # noqa: E402
from fer_model.dataset_pack import pack_dataset  # noqa: E402
from fer_model.tasks import MISSING, TASKS  # noqa: E402


def dry_dataset(out_dir: Path, *, n: int, seed: int) -> Path:
    """Write the two-source random dataset artifact described above into `out_dir`."""
    rng = np.random.default_rng(seed)
    half = n // 2
    labels = {}
    for task in TASKS:
        values = rng.integers(0, task.num_classes, size=n).astype(np.int8)
        # gender's last class ("unsure") has no label in either real source.
        if task.name == "gender":
            values = rng.integers(0, 2, size=n).astype(np.int8)
        if task.name == "emotion":
            values[half:] = MISSING
        else:
            values[:half] = MISSING
        labels[task.name] = values
    labels["race"][half:][rng.random(n - half) < 0.2] = MISSING
    split = rng.choice(np.array([0, 1, 2], np.uint8), size=n, p=[0.7, 0.15, 0.15])
    images = rng.integers(0, 256, size=(n, 50, 50), dtype=np.uint8)
    return write_dataset(out_dir, images=images, labels=labels, split=split,
                         sources=[{"kind": "dry-run", "path": "random", "count": n}])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="pack file to write (.npz)")
    parser.add_argument("--n", type=int, default=240, help="faces (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        dataset = dry_dataset(Path(scratch) / "dataset", n=args.n, seed=args.seed)
        figures = pack_dataset(dataset, args.out, codec="png")
    print(f"wrote {args.out}: {args.n} faces, {figures['bytes'] / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
