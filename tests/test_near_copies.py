"""experiments/real_faces/near_copies.py: a perceptual hash that finds the same photo re-cropped or re-lit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "real_faces" / "near_copies.py"


def _module():
    spec = importlib.util.spec_from_file_location("near_copies", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _photo(seed: int) -> np.ndarray:
    """A smooth 50x50 image (photos are smooth; white noise has no low frequencies to hash)."""
    small = np.random.default_rng(seed).integers(0, 256, size=(6, 6)).astype(np.float32)
    return np.clip(cv2.resize(small, (50, 50), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def test_the_same_photo_re_lit_re_encoded_or_re_cropped_is_nearer_than_any_other_photo():
    near = _module()
    photo = _photo(0)
    relit = np.clip(photo.astype(np.int16) * 1.1 + 12, 0, 255).astype(np.uint8)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 50])[1], cv2.IMREAD_GRAYSCALE)
    recropped = cv2.resize(photo[1:49, 1:49], (50, 50), interpolation=cv2.INTER_AREA)
    others = [_photo(seed) for seed in range(1, 21)]
    hashes = near.perceptual_hashes(np.stack([photo, relit, reencoded, recropped, *others]))
    assert hashes.shape == (24, 8) and hashes.dtype == np.uint8
    distance, index = near.nearest(hashes[1:], hashes[:1])
    assert distance[0] <= 2 and distance[1] <= 2  # re-lit, re-encoded
    assert distance[2] + 6 <= distance[3:].min()  # re-cropped: far nearer than another photo
    assert index.tolist() == [0] * 23
    # The nearest of several is found, the same in chunks of queries as all at once.
    distance, index = near.nearest(hashes[:4], hashes[4:], chunk=3)
    bits = np.unpackbits(hashes, axis=1).astype(int)
    brute = np.abs(bits[:4, None, :] - bits[None, 4:, :]).sum(axis=2)
    assert distance.tolist() == brute.min(axis=1).tolist()
    assert index.tolist() == brute.argmin(axis=1).tolist()
