"""Held-out faces with a near copy in training: the same photo re-cropped, re-encoded or re-lit.

    python experiments/real_faces/near_copies.py DATASET [--model MODEL_DIR] [--montage near.png] > near.json

`fer_model.split_overlap` finds exact copies by their bytes. FER2013 also holds the same photo under
rows whose pixels differ a little. A perceptual hash finds those: each aligned face is resized to
32x32, its 8x8 lowest DCT frequencies are thresholded at their median (64 bits), and a held-out
face's distance to training is the fewest bits in which its hash differs from any training face's.
Prints, per held-out split and source, how many faces are exact copies and how many, not exact,
lie at each distance; with `--model`, the model's emotion accuracy on each group. `--montage`
draws held-out faces beside their nearest training face, one row per distance band, to judge by eye
where near copies end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_model.dataset import Dataset, load_dataset
from fer_model.records import SPLIT_CODES
from fer_model.split_overlap import copies_in, face_digests
from fer_model.tasks import MISSING

#: Distance bands reported (inclusive), beyond exact copies.
BANDS = ((0, 0), (1, 2), (3, 4), (5, 6), (7, 8), (9, 10))
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 8]: each face's 64-bit DCT hash."""
    out = np.empty((len(images), 8), dtype=np.uint8)
    for i, face in enumerate(images):
        low = cv2.dct(cv2.resize(face, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32))[:8, :8]
        out[i] = np.packbits((low > np.median(low)).ravel())
    return out


def nearest(queries: np.ndarray, pool: np.ndarray, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash: (fewest differing bits to any pool hash, the index of that pool hash)."""
    distance = np.empty(len(queries), dtype=np.int64)
    index = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), chunk):
        bits = _POPCOUNT[np.bitwise_xor(queries[start:start + chunk, None, :], pool[None, :, :])].sum(axis=2)
        index[start:start + chunk] = bits.argmin(axis=1)
        distance[start:start + chunk] = bits.min(axis=1)
    return distance, index


def _groups(distance: np.ndarray, exact: np.ndarray) -> dict[str, np.ndarray]:
    groups = {"exact": exact}
    groups.update({f"near {lo}-{hi}": ~exact & (distance >= lo) & (distance <= hi) for lo, hi in BANDS})
    groups[f"farther than {BANDS[-1][1]}"] = ~exact & (distance > BANDS[-1][1])
    return groups


def _source_rows(dataset: Dataset) -> list[tuple[str, np.ndarray]]:
    """(source name, bool [N] of its rows): prepare writes sources one after another."""
    rows, start = [], 0
    for source in dataset.manifest["sources"]:
        mask = np.zeros(len(dataset), dtype=bool)
        mask[start:start + source["records"]] = True
        rows.append((source["name"], mask))
        start += source["records"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--model", help="a model artifact: its emotion accuracy on each group")
    parser.add_argument("--montage", type=Path, help="PNG of held-out test faces beside their nearest training face")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    images, split = np.asarray(dataset.images), np.asarray(dataset.split)
    hashes, digests = perceptual_hashes(images), face_digests(images)
    train = np.flatnonzero(split == SPLIT_CODES["train"])
    predicted = None
    if args.model:
        from fer_model.model_artifact import load_model_artifact

        model = load_model_artifact(args.model).model
        predicted = np.full(len(dataset), -1)
        emotion = np.flatnonzero(dataset.labels["emotion"] != MISSING)
        emotion = emotion[split[emotion] != SPLIT_CODES["train"]]
        outputs = model.predict(images[emotion][..., None].astype(np.float32), batch_size=256, verbose=0)
        predicted[emotion] = np.asarray(outputs["emotion"]).argmax(axis=1)

    report: dict[str, Any] = {"dataset": args.dataset, "dataset_manifest_sha256": dataset.manifest_sha256,
                              "model": args.model, "splits": {}}
    montage_rows: list[np.ndarray] = []
    for name in ("validation", "test"):
        rows = np.flatnonzero(split == SPLIT_CODES[name])
        distance, index = nearest(hashes[rows], hashes[train])
        exact = copies_in(digests, split, of=name, among="train")
        per_source: dict[str, Any] = {}
        for source, mask in _source_rows(dataset):
            mine = mask[rows]
            entry: dict[str, Any] = {"faces": int(mine.sum())}
            for group, members in _groups(distance, exact).items():
                chosen = rows[members & mine]
                entry[group] = {"faces": int(chosen.size)}
                labels = dataset.labels["emotion"][chosen]
                labelled = chosen[labels != MISSING]
                if predicted is not None and labelled.size:
                    right = predicted[labelled] == dataset.labels["emotion"][labelled]
                    entry[group]["emotion_accuracy"] = round(100 * float(right.mean()), 2)
            per_source[source] = entry
        report["splits"][name] = per_source
        if name == "test" and args.montage:
            for lo, hi in BANDS:
                picked = np.flatnonzero(~exact & (distance >= lo) & (distance <= hi))[:8]
                pairs = [np.hstack([images[rows[i]], images[train[index[i]]]]) for i in picked]
                pairs += [np.full((50, 100), 255, np.uint8)] * (8 - len(pairs))
                montage_rows.append(np.hstack([np.pad(p, ((2, 2), (4, 4)), constant_values=255) for p in pairs]))
    if montage_rows:
        cv2.imwrite(str(args.montage), np.vstack(montage_rows))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
