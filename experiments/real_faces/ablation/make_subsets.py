"""Write the ablation's datasets from the prepared real dataset artifact.

    python experiments/real_faces/ablation/make_subsets.py REAL_ALIGNED OUT_DIR --fer 8000 --utk 4000 --seed 0

OUT_DIR/mixed: a seeded sample of the training faces (`--fer` emotion-labelled FER2013 faces, `--utk`
UTKFace faces), with every validation and test face kept, so all arms are scored on the full
PublicTest and held-out UTKFace splits. OUT_DIR/fer and OUT_DIR/utk: the faces of `mixed` labelled
for emotion, respectively for a demographic task (the single-task arm and the teachers train on
these, so no step is spent on faces their heads cannot learn from).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from fer_model.dataset import Dataset, load_dataset, write_dataset

TRAIN = 0


def _write(ds: Dataset, keep: np.ndarray, out: Path, extra: dict) -> None:
    manifest = ds.manifest
    write_dataset(
        out, images=np.asarray(ds.images[keep]), labels={t: np.asarray(a[keep]) for t, a in ds.labels.items()},
        split=np.asarray(ds.split[keep]), sources=manifest.get("sources"), alignment=manifest.get("alignment"),
        extra={"subset_of": {"dataset_manifest_sha256": ds.manifest_sha256, **extra}},
    )
    print(f"wrote {out}: {keep.size} of {len(ds)} samples")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("out")
    parser.add_argument("--fer", type=int, required=True, help="emotion-labelled training faces to keep")
    parser.add_argument("--utk", type=int, required=True, help="demographic-labelled training faces to keep")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = load_dataset(args.dataset)
    split = np.asarray(ds.split)
    emotion = np.asarray(ds.labels["emotion"]) >= 0
    rng = np.random.default_rng(args.seed)
    fer_train = np.flatnonzero((split == TRAIN) & emotion)
    utk_train = np.flatnonzero((split == TRAIN) & ~emotion)
    keep = np.sort(np.concatenate([
        rng.choice(fer_train, size=args.fer, replace=False),
        rng.choice(utk_train, size=args.utk, replace=False),
        np.flatnonzero(split != TRAIN),
    ]))
    extra = {"train_fer": args.fer, "train_utk": args.utk, "seed": args.seed, "other_splits": "all kept"}
    out = Path(args.out)
    _write(ds, keep, out / "mixed", extra)
    _write(ds, keep[emotion[keep]], out / "fer", {**extra, "only": "emotion-labelled"})
    _write(ds, keep[~emotion[keep]], out / "utk", {**extra, "only": "demographic-labelled"})


if __name__ == "__main__":
    main()
