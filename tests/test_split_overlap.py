"""Held-out faces that copy training faces: found by pixels, counted by prepare."""

from __future__ import annotations

import logging

import numpy as np

from fer_cli import main
from fer_model.dataset import Dataset, load_dataset
from fer_model.prepare import prepare_dataset
from fer_model.records import SPLIT_CODES
from fer_model.split_overlap import copies_in, copies_of_held_out, face_digests, overlap_counts, training_copies

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
    digests = face_digests(faces)
    assert copies_in(digests, split, of="validation", among="train").tolist() == [True, False]
    assert copies_in(digests, split, of="test", among="train").tolist() == [False, True, False]
    assert copies_in(digests, split, of="test", among="validation").tolist() == [False, False, True]
    assert overlap_counts(faces, split) == {"validation_in_train": 1, "test_in_train": 1, "test_in_validation": 1}
    # Copies inside one split are not overlap: training on a photo twice leaks nothing.
    faces[2] = faces[0]
    assert overlap_counts(faces, split)["test_in_train"] == 1


def test_training_copies_of_a_dataset():
    faces = _faces(6)
    faces[5] = faces[1]
    split = np.array([TRAIN, TRAIN, VAL, TEST, TEST, TEST], dtype=np.uint8)
    labels = {t: np.full(6, -1, dtype=np.int8) for t in ("emotion", "gender", "race", "age")}
    dataset = Dataset(images=faces, labels=labels, split=split, manifest={})
    assert training_copies(dataset, "test").tolist() == [False, False, True]
    assert training_copies(dataset, "validation").tolist() == [False]


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
    assert "2 validation and 1 test faces are exact copies of training faces" in caplog.text
    assert training_copies(dataset, "test").sum() == 1


def test_prepare_without_copies_records_zeros_and_stays_quiet(tmp_path, caplog):
    rng = np.random.default_rng(4)
    rows = [f"0,{_noise_row(rng)},{usage}" for usage in ("Training", "Training", "PublicTest", "PrivateTest")]
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="fer_model.prepare"):
        out = prepare_dataset(sources=[f"fer2013-csv:{csv}"], out_dir=tmp_path / "ds")
    assert set(load_dataset(out).manifest["split_overlap"].values()) == {0}
    assert "exact copies" not in caplog.text


def test_copies_of_held_out_marks_the_training_side_only():
    faces = _faces(6)
    faces[1] = faces[3]  # a training copy of a validation face
    faces[2] = faces[5]  # a training copy of a test face
    faces[4] = faces[3]  # a test copy of a validation face: neither is training
    split = np.array([TRAIN, TRAIN, TRAIN, VAL, TEST, TEST], dtype=np.uint8)
    assert copies_of_held_out(face_digests(faces), split).tolist() == [False, True, True, False, False, False]


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
    assert dataset.manifest["split_overlap"] == {"validation_in_train": 0, "test_in_train": 0,
                                                 "test_in_validation": 0}
    (source,) = dataset.manifest["sources"]
    assert source["train_copies_dropped"] == 3
    assert source["splits"] == {"train": 3, "validation": 3, "test": 2}
    assert "left out 3 training faces" in caplog.text
    assert "exact copies" not in caplog.text  # nothing held out copies a training face any more
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
