"""Accuracy of a model on transformed views of one split: a check on how far validation is selected on.

    python experiments/real_faces/probe_views.py MODEL_DIR DATASET_DIR SPLIT [VIEW,VIEW,...] [--mirrored] > views.json

Views: the face as prepared (`id`), its mirror (`flip`), 2-pixel shifts, 8% zooms in and out, 6-degree
rotations (edges replicated); then the mean of the probabilities over a few sets of views (test-time
augmentation). Prints {view: {task: accuracy %}} as JSON, with the labelled count per task under "n".
`--mirrored` applies every view to the mirrored face instead (so `id` is the mirror), which scores
test-time augmentation on faces no validation choice has seen.

Why: every warm-started stage restores its best validation epoch, and the next stage starts from it,
so a chain of stages climbs validation accuracy as such, not only accuracy. A model trained with
random flips treats a face and its mirror alike on faces it has not been selected on; a gap between
`id` and `flip` on validation that test does not show measures how much of the validation figure
that selection made.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import cv2
import numpy as np

from fer_model.dataset import load_dataset
from fer_model.model_artifact import load_model_artifact
from fer_model.tasks import MISSING

View = Callable[[np.ndarray], np.ndarray]


def _warp(matrix: np.ndarray) -> View:
    def view(face: np.ndarray) -> np.ndarray:
        size = face.shape[0]
        return cv2.warpAffine(face, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return view


def _views(size: int) -> dict[str, View]:
    centre = ((size - 1) / 2, (size - 1) / 2)
    shifts = {f"s{axis}{d:+d}": _warp(np.float32([[1, 0, d if axis == "x" else 0], [0, 1, d if axis == "y" else 0]]))
              for axis in "xy" for d in (2, -2)}
    return {
        "id": lambda face: face,
        "flip": lambda face: face[:, ::-1],
        **shifts,
        "zoom1.08": _warp(cv2.getRotationMatrix2D(centre, 0, 1.08)),
        "zoom0.93": _warp(cv2.getRotationMatrix2D(centre, 0, 0.93)),
        "rot+6": _warp(cv2.getRotationMatrix2D(centre, 6, 1.0)),
        "rot-6": _warp(cv2.getRotationMatrix2D(centre, -6, 1.0)),
    }


_AVERAGES = {
    "mean(id,flip)": ["id", "flip"],
    "mean(id,flip,shifts)": ["id", "flip", "sx+2", "sx-2", "sy+2", "sy-2"],
    "mean(id,flip,zooms)": ["id", "flip", "zoom1.08", "zoom0.93"],
    "mean(id,flip,rotations)": ["id", "flip", "rot+6", "rot-6"],
    # Without the mirror: under --mirrored, the mean of views of the mirrored face alone.
    "mean(id,shifts,zooms,rotations)": ["id", "sx+2", "sx-2", "sy+2", "sy-2", "zoom1.08", "zoom0.93", "rot+6", "rot-6"],
}


def main(model_dir: str, dataset_dir: str, split: str, only: list[str] | None = None, mirrored: bool = False) -> dict:
    artifact = load_model_artifact(model_dir)
    tasks = list(artifact.tasks)
    images, labels = load_dataset(dataset_dir).subset(split)
    if mirrored:
        images = np.ascontiguousarray(images[:, :, ::-1])
    views = {name: view for name, view in _views(images.shape[1]).items() if not only or name in only}

    probs: dict[str, dict[str, np.ndarray]] = {}
    for name, view in views.items():
        batch = np.stack([view(face) for face in images])[..., None].astype(np.float32)
        outputs = artifact.model.predict(batch, batch_size=256, verbose=0)
        probs[name] = {t: np.asarray(outputs[t], dtype=np.float64) for t in tasks}

    def accuracy(task: str, p: np.ndarray) -> float:
        labelled = labels[task] != MISSING
        return round(100 * float((p[labelled].argmax(1) == labels[task][labelled]).mean()), 2)

    out: dict = {"model": model_dir, "split": split, "mirrored": mirrored,
                 "n": {t: int((labels[t] != MISSING).sum()) for t in tasks}}
    for name in probs:
        out[name] = {t: accuracy(t, probs[name][t]) for t in tasks}
    for name, members in _AVERAGES.items():
        if all(m in probs for m in members):
            out[name] = {t: accuracy(t, np.mean([probs[m][t] for m in members], axis=0)) for t in tasks}
    return out


if __name__ == "__main__":
    mirrored = "--mirrored" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--mirrored"]
    if len(args) not in (3, 4):
        sys.exit(__doc__)
    print(json.dumps(main(*args[:3], args[3].split(",") if len(args) == 4 else None, mirrored=mirrored), indent=1))
