"""Held-out faces that copy a training face, exactly or nearly, per source, and a model's score on each.

    python experiments/real_faces/near_copies.py DATASET [--model MODEL_DIR] [--montage pairs.png] > near.json

`fer_model.split_overlap` finds the copies (exact: the same pixels; near: the same photo
re-cropped, re-encoded or re-lit). This prints, per held-out split and source, how many faces are
exact copies, near copies and neither; with `--model`, the model's emotion accuracy on each group.
`--montage` draws test faces beside their training candidates, one row per band of detail
correlation around `NEAR_DETAIL_CORRELATION`, to judge by eye where near copies end.
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
from fer_model.split_overlap import NEAR_DETAIL_CORRELATION, NEAR_HASH_BITS, FaceIndex
from fer_model.tasks import MISSING

#: Detail correlation bands drawn by `--montage`, around the threshold.
MONTAGE_BANDS = ((0.45, 0.55), (0.55, 0.60), (0.60, 0.65), (0.65, 0.70), (0.70, 0.80))
PAIRS_PER_ROW = 10


def _source_rows(dataset: Dataset) -> list[tuple[str, np.ndarray]]:
    """(source name, bool [N] of its rows): prepare writes sources one after another."""
    rows, start = [], 0
    for source in dataset.manifest["sources"]:
        mask = np.zeros(len(dataset), dtype=bool)
        mask[start:start + source["records"]] = True
        rows.append((source["name"], mask))
        start += source["records"]
    return rows


def _emotion_predictions(model_dir: str, dataset: Dataset) -> np.ndarray:
    """int [N]: the model's emotion on every held-out face with an emotion label, -1 elsewhere."""
    from fer_model.model_artifact import load_model_artifact

    model = load_model_artifact(model_dir).model
    split = np.asarray(dataset.split)
    predicted = np.full(len(dataset), -1)
    rows = np.flatnonzero((dataset.labels["emotion"] != MISSING) & (split != SPLIT_CODES["train"]))
    outputs = model.predict(np.asarray(dataset.images)[rows][..., None].astype(np.float32), batch_size=256, verbose=0)
    predicted[rows] = np.asarray(outputs["emotion"]).argmax(axis=1)
    return predicted


def _montage(images: np.ndarray, query: np.ndarray, candidate: np.ndarray, correlation: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    rows = []
    for lo, hi in MONTAGE_BANDS:
        picked = rng.permutation(np.flatnonzero((correlation >= lo) & (correlation < hi)))[:PAIRS_PER_ROW]
        pairs = [np.hstack([images[query[i]], images[candidate[i]]]) for i in picked]
        pairs += [np.full((50, 100), 255, np.uint8)] * (PAIRS_PER_ROW - len(pairs))
        rows.append(np.hstack([np.pad(p, ((2, 2), (4, 4)), constant_values=255) for p in pairs]))
    return np.vstack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--model", help="a model artifact: its emotion accuracy on each group")
    parser.add_argument("--montage", type=Path, help="PNG of test faces beside their near-copy candidates")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset)
    images, split = np.asarray(dataset.images), np.asarray(dataset.split)
    index = FaceIndex(images)
    predicted = None if args.model is None else _emotion_predictions(args.model, dataset)
    report: dict[str, Any] = {"dataset": args.dataset, "dataset_manifest_sha256": dataset.manifest_sha256,
                              "model": args.model, "near_hash_bits": NEAR_HASH_BITS,
                              "near_detail_correlation": NEAR_DETAIL_CORRELATION, "splits": {}}
    for name in ("validation", "test"):
        rows = np.flatnonzero(split == SPLIT_CODES[name])
        found = index.split_copies(split, of=name, among="train", near=True)
        groups = {"exact": found.exact, "near": found.near, "neither": ~found.either}
        per_source: dict[str, Any] = {}
        for source, mask in _source_rows(dataset):
            entry: dict[str, Any] = {"faces": int(mask[rows].sum())}
            for group, members in groups.items():
                chosen = rows[members & mask[rows]]
                entry[group] = {"faces": int(chosen.size)}
                labelled = chosen[dataset.labels["emotion"][chosen] != MISSING]
                if predicted is not None and labelled.size:
                    right = predicted[labelled] == dataset.labels["emotion"][labelled]
                    entry[group]["emotion_accuracy"] = round(100 * float(right.mean()), 2)
            per_source[source] = entry
        report["splits"][name] = per_source
        if name == "test" and args.montage:
            query, candidate, correlation = index.candidates(rows, np.flatnonzero(split == SPLIT_CODES["train"]))
            cv2.imwrite(str(args.montage), _montage(images, query, candidate, correlation))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
