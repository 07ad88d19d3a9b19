"""Held-out faces that copy training faces, exactly or nearly: found, counted by prepare, dropped on request."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from fer_cli import main
from fer_model import split_overlap
from fer_model.dataset import Dataset, load_dataset
from fer_model.prepare import prepare_dataset
from fer_model.records import SPLIT_CODES
from fer_model.split_overlap import (
    NEAR_DETAIL_CORRELATION,
    NEAR_HASH_BITS,
    FaceIndex,
    copies_of_held_out,
    face_digests,
    overlap_counts,
    training_copies,
)

TRAIN, VAL, TEST = (SPLIT_CODES[s] for s in ("train", "validation", "test"))


def _faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 50, 50), dtype=np.uint8)


def test_equal_faces_have_equal_digests_and_one_pixel_tells_them_apart():
    faces = _faces(3)
    faces[2] = faces[0]
    digests = face_digests(faces)
    assert digests[0] == digests[2] != digests[1]
    nudged = faces[0].copy()
    nudged[49, 49] ^= 1
    assert face_digests(nudged[None])[0] != digests[0]


def test_copies_are_marked_in_the_split_they_were_found_in():
    faces = _faces(8)
    split = np.array([TRAIN, TRAIN, TRAIN, VAL, VAL, TEST, TEST, TEST], dtype=np.uint8)
    faces[3] = faces[1]  # a validation copy of a training face
    faces[6] = faces[0]  # a test copy of a training face
    faces[7] = faces[4]  # a test copy of a validation face
    index = FaceIndex(faces)
    assert index.split_copies(split, of="validation", among="train", near=False).exact.tolist() == [True, False]
    assert index.split_copies(split, of="test", among="train", near=False).exact.tolist() == [False, True, False]
    assert index.split_copies(split, of="test", among="validation", near=False).exact.tolist() == [False, False, True]
    assert overlap_counts(faces, split, near=False) == {"validation_in_train": 1, "test_in_train": 1,
                                                        "test_in_validation": 1}
    # Noise has no coarse layout in common: no near copies beyond the exact ones.
    assert overlap_counts(faces, split, near=True) == {"validation_in_train": 1, "validation_near_train": 0,
                                                       "test_in_train": 1, "test_near_train": 0,
                                                       "test_in_validation": 1, "test_near_validation": 0}
    # Copies inside one split are not overlap: training on a photo twice leaks nothing.
    faces[2] = faces[0]
    assert overlap_counts(faces, split, near=False)["test_in_train"] == 1


def test_training_copies_of_a_dataset():
    faces = _faces(6)
    faces[5] = faces[1]
    split = np.array([TRAIN, TRAIN, VAL, TEST, TEST, TEST], dtype=np.uint8)
    labels = {t: np.full(6, -1, dtype=np.int8) for t in ("emotion", "gender", "race", "age")}
    dataset = Dataset(images=faces, labels=labels, split=split, manifest={})
    assert training_copies(dataset, "test").exact.tolist() == [False, False, True]
    assert training_copies(dataset, "validation").exact.tolist() == [False]


def _noise_row(rng: np.random.Generator) -> str:
    return " ".join(str(v) for v in rng.integers(0, 256, size=48 * 48))


def test_prepare_counts_fer2013_rows_repeated_across_its_sets(tmp_path, caplog):
    # FER2013 repeats photos across Training, PublicTest and PrivateTest; "official" mode makes those
    # train, validation and test.
    rng = np.random.default_rng(3)
    train = [_noise_row(rng) for _ in range(6)]
    public = [train[0], train[1], _noise_row(rng)]
    private = [train[2], public[2], _noise_row(rng)]
    rows = ([f"0,{p},Training" for p in train] + [f"1,{p},PublicTest" for p in public]
            + [f"2,{p},PrivateTest" for p in private])
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="fer_model.prepare"):
        out = prepare_dataset(sources=[f"fer2013-csv:{csv}"], out_dir=tmp_path / "ds")
    dataset = load_dataset(out)
    assert dataset.manifest["split_overlap"] == {"validation_in_train": 2, "test_in_train": 1,
                                                 "test_in_validation": 1}
    assert "near_copies" not in dataset.manifest["prepare"]  # not asked: the manifest is as it was
    assert "2 validation and 1 test faces are exact copies of training faces" in caplog.text
    assert training_copies(dataset, "test").exact.sum() == 1


def test_prepare_without_copies_records_zeros_and_stays_quiet(tmp_path, caplog):
    rng = np.random.default_rng(4)
    rows = [f"0,{_noise_row(rng)},{usage}" for usage in ("Training", "Training", "PublicTest", "PrivateTest")]
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="fer_model.prepare"):
        out = prepare_dataset(sources=[f"fer2013-csv:{csv}"], out_dir=tmp_path / "ds")
    assert set(load_dataset(out).manifest["split_overlap"].values()) == {0}
    assert "copies of training faces" not in caplog.text


def test_copies_of_held_out_marks_the_training_side_only():
    faces = _faces(6)
    faces[1] = faces[3]  # a training copy of a validation face
    faces[2] = faces[5]  # a training copy of a test face
    faces[4] = faces[3]  # a test copy of a validation face: neither is training
    split = np.array([TRAIN, TRAIN, TRAIN, VAL, TEST, TEST], dtype=np.uint8)
    assert copies_of_held_out(faces, split, near=False).tolist() == [False, True, True, False, False, False]


def test_prepare_can_drop_the_training_copies_and_keeps_every_held_out_face(tmp_path, caplog, capsys):
    rng = np.random.default_rng(5)
    train = [_noise_row(rng) for _ in range(6)]
    public = [train[0], train[1], _noise_row(rng)]
    private = [train[2], _noise_row(rng)]
    rows = ([f"{i % 7},{p},Training" for i, p in enumerate(train)] + [f"1,{p},PublicTest" for p in public]
            + [f"2,{p},PrivateTest" for p in private])
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    kept = load_dataset(prepare_dataset(sources=[f"fer2013-csv:{csv}"], out_dir=tmp_path / "kept"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fer_model.prepare"):
        assert main(["prepare", "--source", f"fer2013-csv:{csv}", "--out", str(tmp_path / "ds"),
                     "--drop-training-copies"]) == 0
    assert "; 3 training copies of held-out faces left out)" in capsys.readouterr().out
    dataset = load_dataset(tmp_path / "ds")
    assert set(dataset.manifest["split_overlap"].values()) == {0}
    (source,) = dataset.manifest["sources"]
    assert source["train_copies_dropped"] == 3
    assert source["splits"] == {"train": 3, "validation": 3, "test": 2}
    assert "left out 3 training faces" in caplog.text
    assert "copies of training faces" not in caplog.text  # nothing held out copies a training face any more
    # The held-out splits are untouched, face for face; the training faces left are the unrepeated ones
    # with their own labels.
    for name in ("validation", "test"):
        np.testing.assert_array_equal(dataset.images[dataset.indices(name)], kept.images[kept.indices(name)])
    train_left = dataset.indices("train")
    np.testing.assert_array_equal(dataset.images[train_left], kept.images[kept.indices("train")[3:]])
    np.testing.assert_array_equal(dataset.labels["emotion"][train_left],
                                  kept.labels["emotion"][kept.indices("train")[3:]])
    # Without the option nothing is dropped and the manifest says nothing of it.
    assert "train_copies_dropped" not in kept.manifest["sources"][0]
    assert kept.manifest["counts"]["train"]["total"] == 6


def _layout(seed: int) -> np.ndarray:
    """A face's coarse layout: smooth, all a 64-bit DCT hash sees."""
    small = np.random.default_rng(seed).uniform(0, 200, size=(5, 5)).astype(np.float32)
    return cv2.resize(small, (50, 50), interpolation=cv2.INTER_CUBIC)


def _detail(seed: int) -> np.ndarray:
    """A photo's fine detail (skin, hair, noise): no coarse layout of its own."""
    fine = cv2.resize(np.random.default_rng(1000 + seed).normal(0, 12, size=(25, 25)).astype(np.float32), (50, 50))
    return fine - cv2.GaussianBlur(fine, (0, 0), 3)


def _photo(layout: int, detail: int) -> np.ndarray:
    return np.clip(_layout(layout) + _detail(detail), 0, 255).astype(np.uint8)


def _near_copy_faces() -> tuple[np.ndarray, np.ndarray]:
    """Faces and splits: train holds a photo and others; validation and test hold its copies and strangers."""
    photo = _photo(0, 0)
    relit = np.clip(photo.astype(np.float32) * 0.8 + 30, 0, 255).astype(np.uint8)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_GRAYSCALE)
    look_alike = _photo(0, 1)  # another photo laid out the same: a stranger to the hash only
    faces = np.stack([photo, _photo(1, 2), _photo(2, 3), relit, look_alike, photo, reencoded, _photo(3, 4)])
    split = np.array([TRAIN, TRAIN, TRAIN, VAL, VAL, TEST, TEST, TEST], dtype=np.uint8)
    return faces, split


def test_the_same_photo_re_lit_or_re_encoded_is_a_near_copy_and_a_look_alike_is_not():
    faces, split = _near_copy_faces()
    index = FaceIndex(faces)
    validation = index.split_copies(split, of="validation", among="train", near=True)
    assert validation.exact.tolist() == [False, False]
    assert validation.near.tolist() == [True, False]  # re-lit: a near copy; the look-alike: not
    test = index.split_copies(split, of="test", among="train", near=True)
    assert test.exact.tolist() == [True, False, False]
    assert test.near.tolist() == [False, True, False]  # an exact copy is not counted again as near
    assert test.either.tolist() == [True, True, False]
    # The look-alike passed the hash and failed on its detail: both tests are needed.
    query, candidate, correlation = index.candidates(np.array([4]), np.flatnonzero(split == TRAIN))
    assert query.tolist() == [4] and candidate.tolist() == [0]
    assert correlation[0] < NEAR_DETAIL_CORRELATION
    assert overlap_counts(faces, split, near=True) == {"validation_in_train": 0, "validation_near_train": 1,
                                                       "test_in_train": 1, "test_near_train": 1,
                                                       "test_in_validation": 0, "test_near_validation": 2}
    # Not asked for near copies: none looked for, only the exact one found.
    assert index.split_copies(split, of="test", among="train", near=False).near is None
    assert overlap_counts(faces, split, near=False) == {"validation_in_train": 0, "test_in_train": 1,
                                                        "test_in_validation": 0}
    # Training faces that copy held-out ones: the photo itself, exactly (test) or nearly (validation).
    assert copies_of_held_out(faces, split, near=True).tolist() == [True] + [False] * 7
    assert copies_of_held_out(faces, split, near=False).tolist() == [True] + [False] * 7


def test_candidates_are_every_pair_within_the_hash_bits_in_chunks_or_at_once(monkeypatch):
    faces = np.stack([_photo(seed % 3, seed) for seed in range(12)])
    hashes = split_overlap.perceptual_hashes(faces)
    assert set(np.unique(hashes).tolist()) == {-1.0, 1.0} and hashes.shape == (12, 64)
    bits_apart = (hashes[:, None, :] != hashes[None, :, :]).sum(axis=2)  # counted bit by bit
    of, among = np.arange(0, 7), np.arange(7, 12)
    want = {(a, b) for a in of for b in among if bits_apart[a, b] <= NEAR_HASH_BITS}
    assert want  # photos sharing a layout are candidates
    whole = FaceIndex(faces).candidates(of, among)
    monkeypatch.setattr(split_overlap, "_CHUNK", 2)
    chunked = FaceIndex(faces).candidates(of, among)
    for got in (whole, chunked):
        assert set(zip(got[0].tolist(), got[1].tolist(), strict=True)) == want
    np.testing.assert_allclose(np.sort(whole[2]), np.sort(chunked[2]), rtol=1e-6)
    assert FaceIndex(faces).copies(of, np.array([], dtype=np.int64), near=True).near.tolist() == [False] * 7


@pytest.mark.parametrize("drop", [False, True])
def test_prepare_counts_near_copies_when_asked_and_can_drop_them(tmp_path, caplog, drop):
    photo, look_alike, other = _photo(0, 0), _photo(0, 1), _photo(1, 2)
    relit = np.clip(photo[1:49, 1:49].astype(np.float32) * 0.8 + 30, 0, 255).astype(np.uint8)  # FER2013 is 48x48
    rows = [f"3,{' '.join(map(str, cv2.resize(face, (48, 48)).ravel()))},{usage}"
            for face, usage in ((photo[1:49, 1:49], "Training"), (other, "Training"), (relit, "PublicTest"),
                                (look_alike, "PrivateTest"))]
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.INFO, logger="fer_model.prepare"):
        assert main(["prepare", "--source", f"fer2013-csv:{csv}", "--out", str(tmp_path / "ds"), "--near-copies",
                     *(["--drop-training-copies"] if drop else [])]) == 0
    dataset = load_dataset(tmp_path / "ds")
    assert dataset.manifest["prepare"]["near_copies"] is True
    assert training_copies(dataset, "validation").near.tolist() == [not drop]  # evaluate follows the manifest
    overlap = dataset.manifest["split_overlap"]
    assert overlap["validation_near_train"] == (0 if drop else 1)
    assert overlap["validation_in_train"] == overlap["test_in_train"] == overlap["test_near_train"] == 0
    assert dataset.manifest["counts"]["train"]["total"] == (1 if drop else 2)
    if drop:
        assert dataset.manifest["sources"][0]["train_copies_dropped"] == 1
    else:
        assert ("0 validation and 0 test faces are exact copies, and 1 and 0 more are near copies (the same photo "
                "re-cropped, re-encoded or re-lit) of training faces") in caplog.text
