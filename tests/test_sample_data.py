"""Synthetic sample data: deterministic, every class present, readable by the real readers,
with eyes that the Haar eye cascade finds where the annotations say they are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fer_model.alignment import AlignConfig, align_batch
from fer_model.errors import ConfigError, DataError
from fer_model.images import decode_image
from fer_model.readers import read_source
from fer_model.records import Record, Reject
from fer_model.sample_data import write_sample_data
from fer_model.tasks import TASKS
from tests._fixtures.datasets import SAMPLE_N


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_faces(tmp_path):
    info = write_sample_data(tmp_path / "a", n=28, seed=5)
    write_sample_data(tmp_path / "b", n=28, seed=5)
    write_sample_data(tmp_path / "c", n=28, seed=6)
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a["fer2013.csv"] != c["fer2013.csv"]
    assert info["counts"]["fer2013"] == {"faces": 14, "malformed_rows": 4, "rows": 18}
    assert info["counts"]["rafdb"]["faces"] == 14 and info["counts"]["rafdb"]["entries"] == 15
    assert info["sources"] == [f"fer2013-csv:{tmp_path / 'a' / 'fer2013.csv'}", f"rafdb:{tmp_path / 'a' / 'rafdb'}"]


@pytest.mark.parametrize("n", [13, 0, 20.5, True])
def test_too_few_faces_is_a_config_error(tmp_path, n):
    with pytest.raises(ConfigError, match="`n` must be an integer >= 14"):
        write_sample_data(tmp_path, n=n)


def test_fer_csv_reads_back_with_every_emotion_usage_and_the_four_bad_rows(sample_data_dir):
    items = list(read_source(f"fer2013-csv:{sample_data_dir / 'fer2013.csv'}"))
    records = [i for i in items if isinstance(i, Record)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert len(records) == SAMPLE_N // 2
    assert Counter(r.labels["emotion"] for r in records).keys() == set(range(7))
    splits = Counter(r.split for r in records)
    assert splits["validation"] == splits["test"] == round(0.1 * len(records))
    assert all(r.image.shape == (48, 48) and set(r.labels) == {"emotion"} for r in records)
    reasons = sorted(r.reason for r in rejects)
    assert len(reasons) == 4
    for expected in ("2303 pixels", "not all integers", "unknown emotion code 9", "unknown Usage 'Holdout'"):
        assert any(expected in reason for reason in reasons), (expected, reasons)


def test_rafdb_reads_back_with_every_class_of_every_task(sample_data_dir):
    records = list(read_source(f"rafdb:{sample_data_dir / 'rafdb'}"))
    assert all(isinstance(r, Record) for r in records)  # the corrupt JPEG is only found on decoding
    assert len(records) == SAMPLE_N - SAMPLE_N // 2 + 1
    for task in TASKS:
        assert {r.labels[task.name] for r in records} == set(range(task.num_classes)), task.name
    assert {r.split for r in records} == {"train", "validation", "test"}
    decoded, failed = [], []
    for r in records:
        try:
            decoded.append(decode_image(r.image))
        except DataError:
            failed.append(r.key)
    assert len(failed) == 1
    assert all(img.shape == (100, 100, 3) for img in decoded)


def test_haar_finds_the_annotated_eyes(sample_data_dir):
    """The drawn eyes are what the eye cascade detects, at the annotated landmarks (first 60 faces)."""
    root = sample_data_dir / "rafdb"
    names = sorted((root / "Image/aligned").glob("test_*_aligned.jpg"))[:60]
    results = align_batch([p.read_bytes() for p in names], is_face_crop=True, config=AlignConfig())
    found = 0
    for path, result in zip(names, results, strict=True):
        if not result.eyes_found:
            continue
        found += 1
        stem = path.name.removesuffix("_aligned.jpg")
        lines = (root / "Annotation/manual" / f"{stem}_manu_attri.txt").read_text().splitlines()
        annotated = np.array([[float(v) for v in line.split("\t")] for line in lines[:2]])
        assert np.abs(np.array(result.eyes) - annotated).max() < 6, (stem, result.eyes, annotated)
    assert found >= 0.9 * len(names)
