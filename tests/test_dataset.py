"""Dataset artifact: round trip, hash verification, validation of what is written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fer_model.dataset import load_dataset, write_dataset
from fer_model.dataset_pack import pack_dataset, unpack_dataset
from fer_model.errors import ArtifactError, ConfigError
from fer_model.tasks import MISSING, TASK_NAMES


def _arrays(n: int = 12, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    # Smooth images, like faces, so lossy packing is measurable but not destructive.
    base = np.linspace(0, 255, 50 * 50).reshape(50, 50)
    images = np.stack([np.roll(base, i, axis=1) for i in range(n)]).astype(np.uint8)
    labels = {t: rng.integers(-1, 3, n).astype(np.int8) for t in TASK_NAMES}
    split = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2][:n], dtype=np.uint8)
    return images, labels, split


def test_round_trip_keeps_arrays_and_counts(tmp_path):
    images, labels, split = _arrays()
    rejects = [{"source": "s", "key": "row 3", "reason": "malformed pixels"}]
    out = write_dataset(tmp_path / "ds", images=images, labels=labels, split=split, rejects=rejects)
    ds = load_dataset(out)
    np.testing.assert_array_equal(ds.images, images)
    for t in TASK_NAMES:
        np.testing.assert_array_equal(ds.labels[t], labels[t])
    np.testing.assert_array_equal(ds.split, split)
    assert ds.manifest["rejects"] == rejects
    emotion = ds.manifest["counts"]["train"]["tasks"]["emotion"]
    assert emotion["labelled"] + emotion["unlabelled"] == 6
    assert emotion["unlabelled"] == int((labels["emotion"][:6] == MISSING).sum())
    train_images, train_labels = ds.subset("validation")
    assert train_images.shape == (3, 50, 50) and train_labels["age"].shape == (3,)
    assert len(ds.manifest_sha256) == 64


def test_tampered_array_fails_hash_check(tmp_path):
    images, labels, split = _arrays()
    out = write_dataset(tmp_path / "ds", images=images, labels=labels, split=split)
    arr = np.load(out / "images.npy")
    arr[0, 0, 0] ^= 1
    np.save(out / "images.npy", arr)
    with pytest.raises(ArtifactError, match="images.npy fails its hash check"):
        load_dataset(out)
    assert load_dataset(out, verify=False).images[0, 0, 0] == arr[0, 0, 0]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: m.update(format_version=99), "format version 99"),
        (lambda m: m.update(format="something-else"), "not a fer-mtl-dataset artifact"),
    ],
)
def test_foreign_manifest_is_refused(tmp_path, mutate, message):
    images, labels, split = _arrays()
    out = write_dataset(tmp_path / "ds", images=images, labels=labels, split=split)
    manifest = json.loads((out / "manifest.json").read_text())
    mutate(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=message):
        load_dataset(out)


def test_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(ArtifactError, match="run `fer-mtl prepare`"):
        load_dataset(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((2, 50, 50), np.float32)}, "images must be uint8"),
        ({"labels": {"emotion": np.zeros(12, np.int8)}}, "labels lack task 'gender'"),
        ({"label_value": 7}, r"labels\['gender'\] has values outside -1..2"),
        ({"split": np.full(12, 3, np.uint8)}, "split must be"),
    ],
)
def test_writer_rejects_inconsistent_arrays(tmp_path, change, message):
    images, labels, split = _arrays()
    if "label_value" in change:
        labels["gender"][0] = change.pop("label_value")
    kwargs = {"images": images, "labels": labels, "split": split, **change}
    with pytest.raises(ArtifactError, match=message):
        write_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(("codec", "lossless"), [("png", True), ("webp", False)])
def test_pack_round_trip(tmp_path, codec, lossless):
    images, labels, split = _arrays()
    src = write_dataset(tmp_path / "ds", images=images, labels=labels, split=split)
    figures = pack_dataset(src, tmp_path / "ds.npz", codec=codec, quality=90)
    back = load_dataset(unpack_dataset(tmp_path / "ds.npz", tmp_path / "back"))
    for t in TASK_NAMES:
        np.testing.assert_array_equal(back.labels[t], labels[t])
    np.testing.assert_array_equal(back.split, split)
    assert back.manifest["transport"]["codec"] == codec
    if lossless:
        np.testing.assert_array_equal(back.images, images)
        assert figures["psnr_db"] == float("inf")
    else:
        assert figures["psnr_db"] > 30
        assert np.abs(back.images.astype(int) - images.astype(int)).mean() < 3


def test_unknown_split_is_a_config_error_naming_the_valid_splits(tmp_path):
    images, labels, split = _arrays()
    ds = load_dataset(write_dataset(tmp_path / "ds", images=images, labels=labels, split=split))
    assert ds.indices("test").tolist() == [9, 10, 11]
    with pytest.raises(ConfigError, match=r"^unknown split 'valid'; pass one of train, validation, test$"):
        ds.indices("valid")


def test_split_hash_follows_the_scored_faces_and_labels_only(tmp_path):
    images, labels, split = _arrays()
    test_rows = np.flatnonzero(split == 2)
    base = load_dataset(write_dataset(tmp_path / "a", images=images, labels=labels, split=split,
                                      sources=[{"kind": "k", "path": "/data/a"}]))
    # Another source path, a teacher's soft labels with their provenance, a changed training face:
    # the manifest moves, the test set does not.
    more_train = images.copy()
    more_train[0] ^= 7
    soft = np.full((len(images), 7), np.nan, dtype=np.float32)
    soft[0] = 1 / 7
    rebuilt = load_dataset(write_dataset(
        tmp_path / "b", images=more_train, labels=labels, split=split, sources=[{"kind": "k", "path": "/data/b"}],
        soft_labels={"emotion": soft}, soft_label_provenance={"emotion": {"teacher": "t", "created_at": "now"}}))
    assert rebuilt.manifest_sha256 != base.manifest_sha256
    assert rebuilt.split_sha256("test") == base.split_sha256("test")
    assert rebuilt.split_sha256("train") != base.split_sha256("train")
    assert len(base.split_sha256("test")) == 64
    # One test pixel, one test label, or one face moved out of the test split is another test set.
    pixel = images.copy()
    pixel[test_rows[0], 3, 4] ^= 1
    label = {t: a.copy() for t, a in labels.items()}
    label["age"][test_rows[-1]] = (label["age"][test_rows[-1]] + 1) % 3
    fewer = split.copy()
    fewer[test_rows[0]] = 1
    for name, (imgs, labs, spl) in {"pixel": (pixel, labels, split), "label": (images, label, split),
                                    "row": (images, labels, fewer)}.items():
        other = load_dataset(write_dataset(tmp_path / name, images=imgs, labels=labs, split=spl))
        assert other.split_sha256("test") != base.split_sha256("test"), name
