"""Share of a split's FER2013 faces (emotion-labelled, no age label) that each model's age head puts in each bin.

    python experiments/real_faces/age_share.py DATASET SPLIT MODEL_DIR [MODEL_DIR ...]

Issue 13 asks that the shipped model put at most 10% of FER2013 PublicTest faces in 0-3. Models
are compared on the validation split; the test split is read once, for the model chosen.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("split", choices=("train", "validation", "test"))
    parser.add_argument("models", nargs="+")
    args = parser.parse_args()

    from fer_model.dataset import load_dataset
    from fer_model.model_artifact import load_model_artifact
    from fer_model.predict import predict_probabilities
    from fer_model.tasks import MISSING, get_task

    dataset = load_dataset(args.dataset)
    rows = dataset.indices(args.split)
    fer = rows[(dataset.labels["emotion"][rows] != MISSING) & (dataset.labels["age"][rows] == MISSING)]
    images = np.asarray(dataset.images[fer], dtype=np.uint8)[..., np.newaxis]
    bins = get_task("age").classes
    out = {}
    for path in args.models:
        probs = predict_probabilities(load_model_artifact(path).model, images, tasks=("age",))["age"]
        counts = np.bincount(probs.argmax(axis=1), minlength=len(bins))
        shares = {b: round(float(c) / fer.size, 4) for b, c in zip(bins, counts, strict=True)}
        out[path] = {"faces": int(fer.size), **shares}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
