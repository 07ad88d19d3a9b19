"""Write a seeded, per-split random fraction of a dataset artifact (for cheap CPU tuning studies).

    python experiments/real_faces/subset.py DATASET OUT --fraction 0.25 --seed 0
"""

from __future__ import annotations

import argparse

import numpy as np

from fer_model.dataset import load_dataset, write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("out")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ds = load_dataset(args.dataset)
    rng = np.random.default_rng(args.seed)
    keep = np.sort(rng.permutation(len(ds))[: int(round(args.fraction * len(ds)))])
    manifest = ds.manifest
    write_dataset(
        args.out, images=np.asarray(ds.images[keep]), labels={t: a[keep] for t, a in ds.labels.items()},
        split=ds.split[keep], sources=manifest.get("sources"), alignment=manifest.get("alignment"),
        extra={"subset_of": {"dataset_manifest_sha256": ds.manifest_sha256, "fraction": args.fraction,
                             "seed": args.seed}},
    )
    print(f"wrote {args.out}: {keep.size} of {len(ds)} samples")


if __name__ == "__main__":
    main()
