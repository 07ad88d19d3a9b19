"""experiments/real_faces/near_copies.py: held-out faces that copy training ones, per source and kind."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from fer_model.dataset import write_dataset
from fer_model.records import SPLIT_CODES

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "real_faces" / "near_copies.py"
TRAIN, VAL, TEST = (SPLIT_CODES[s] for s in ("train", "validation", "test"))


def _module():
    spec = importlib.util.spec_from_file_location("near_copies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _photo(seed: int) -> np.ndarray:
    """A smooth layout with fine detail of its own, like a photo."""
    rng = np.random.default_rng(seed)
    layout = cv2.resize(rng.uniform(0, 200, size=(5, 5)).astype(np.float32), (50, 50), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.normal(0, 12, size=(25, 25)).astype(np.float32), (50, 50))
    return np.clip(layout + fine - cv2.GaussianBlur(fine, (0, 0), 3), 0, 255).astype(np.uint8)


def test_counts_each_kind_of_copy_per_split_and_source(tmp_path, monkeypatch, capsys):
    photo = _photo(0)
    relit = np.clip(photo.astype(np.float32) * 0.8 + 30, 0, 255).astype(np.uint8)
    # fer2013: two training faces; validation holds the photo re-lit; test holds it exactly and a stranger.
    # utkface: one training face, copied exactly into validation.
    faces = np.stack([photo, _photo(1), relit, photo, _photo(2), _photo(3), _photo(3)])
    split = np.array([TRAIN, TRAIN, VAL, TEST, TEST, TRAIN, VAL], dtype=np.uint8)
    emotion = np.array([3, 4, 3, 3, 5, -1, -1], dtype=np.int8)
    labels = {"emotion": emotion, **{t: np.full(7, -1, dtype=np.int8) for t in ("gender", "race", "age")}}
    dataset = write_dataset(tmp_path / "ds", images=faces, labels=labels, split=split,
                            sources=[{"name": "fer2013", "records": 5}, {"name": "utkface", "records": 2}])
    monkeypatch.setattr(sys, "argv", ["near_copies.py", str(dataset), "--montage", str(tmp_path / "pairs.png")])
    _module().main()
    report = json.loads(capsys.readouterr().out)
    validation, test = report["splits"]["validation"], report["splits"]["test"]
    assert validation["fer2013"] == {"faces": 1, "exact": {"faces": 0}, "near": {"faces": 1}, "neither": {"faces": 0}}
    assert validation["utkface"] == {"faces": 1, "exact": {"faces": 1}, "near": {"faces": 0}, "neither": {"faces": 0}}
    assert test["fer2013"] == {"faces": 2, "exact": {"faces": 1}, "near": {"faces": 0}, "neither": {"faces": 1}}
    assert test["utkface"] == {"faces": 0, "exact": {"faces": 0}, "near": {"faces": 0}, "neither": {"faces": 0}}
    assert report["near_detail_correlation"] == 0.65
    montage = cv2.imread(str(tmp_path / "pairs.png"), cv2.IMREAD_GRAYSCALE)
    assert montage.shape == (5 * 54, 10 * 108)  # one row per correlation band, ten pairs a row
