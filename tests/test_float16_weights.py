"""store_float16_weights: half the file, the same model back (float32 variables, answers within rounding)."""

import io
import zipfile

import h5py
import numpy as np
import pytest

from fer_model._keras_file import load_keras_model
from fer_model.errors import ArtifactError
from fer_model.float16_weights import MIN_ELEMENTS, WEIGHTS_MEMBER, store_float16_weights
from fer_model.model import ModelConfig, build_model


def _stored_dtypes(path) -> dict[str, tuple[np.dtype, int]]:
    """{dataset path: (dtype, size)} of the weights inside a .keras file."""
    with zipfile.ZipFile(path) as archive, h5py.File(io.BytesIO(archive.read(WEIGHTS_MEMBER)), "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: (obj.dtype, obj.size)})
                     if isinstance(obj, h5py.Dataset) else None)
        return found


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(width=0.5))
    path = tmp_path_factory.mktemp("float16") / "model.keras"
    model.save(path)
    return path


@pytest.fixture()
def images():
    return np.random.default_rng(0).integers(0, 256, size=(16, 50, 50, 1)).astype("float32")


def test_halves_the_file_and_loads_back_as_float32_with_the_same_answers(model_file, images, tmp_path):
    copy = tmp_path / "model.keras"
    copy.write_bytes(model_file.read_bytes())
    report = store_float16_weights(copy)

    assert report.converted > 0 and report.kept > 0
    assert report.bytes_before == model_file.stat().st_size and report.bytes_after == copy.stat().st_size
    assert report.bytes_after < 0.55 * report.bytes_before
    stored = _stored_dtypes(copy)
    assert {dtype for dtype, size in stored.values() if size >= MIN_ELEMENTS} == {np.dtype("float16")}
    assert {dtype for dtype, size in stored.values() if size < MIN_ELEMENTS} == {np.dtype("float32")}

    original, halved = load_keras_model(model_file), load_keras_model(copy)
    assert {v.dtype for v in halved.weights} == {"float32"}
    for a, b in zip(original.weights, halved.weights, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        # float16 keeps 11 significant bits: each weight within its rounding, none identical by accident.
        np.testing.assert_allclose(b, a, rtol=2**-10, atol=1e-7)
    before, after = original.predict(images, verbose=0), halved.predict(images, verbose=0)
    for task in before:
        assert np.abs(before[task] - after[task]).max() < 5e-3
    assert any(not np.array_equal(before[task], after[task]) for task in before), "nothing was rounded"


def test_a_second_run_converts_nothing_more(model_file, tmp_path):
    copy = tmp_path / "model.keras"
    copy.write_bytes(model_file.read_bytes())
    first = store_float16_weights(copy)
    once = [np.asarray(v) for v in load_keras_model(copy).weights]
    stored = _stored_dtypes(copy)
    second = store_float16_weights(copy)
    assert second.converted == 0 and second.kept == first.kept
    assert _stored_dtypes(copy) == stored
    # HDF5 may lay the copy out a few hundred bytes apart; what it stores is the same.
    assert abs(second.bytes_after - first.bytes_after) < 0.01 * first.bytes_after
    for a, b in zip(once, load_keras_model(copy).weights, strict=True):
        np.testing.assert_array_equal(np.asarray(b), a)


def test_an_array_float16_cannot_hold_stays_float32(tmp_path, images):
    import keras

    keras.utils.set_random_seed(1)
    model = build_model(ModelConfig(width=0.25))
    kernel, bias = model.get_layer("emotion").get_weights()
    kernel[0, 0] = 1e5  # past float16's largest finite value, 65504
    model.get_layer("emotion").set_weights([kernel, bias])
    path = tmp_path / "model.keras"
    model.save(path)

    store_float16_weights(path)
    loaded = load_keras_model(path)
    np.testing.assert_array_equal(loaded.get_layer("emotion").get_weights()[0], kernel)
    assert np.isfinite(loaded.predict(images, verbose=0)["emotion"]).all()


def test_a_file_that_is_not_a_keras_archive_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ArtifactError, match="not a readable Keras 3 .keras archive"):
        store_float16_weights(path)
    assert path.read_bytes() == b"not a zip at all"


def test_an_archive_without_weights_is_refused_and_left_alone(model_file, tmp_path):
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(model_file) as src, zipfile.ZipFile(path, "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
    original = path.read_bytes()
    with pytest.raises(ArtifactError, match=f"holds no {WEIGHTS_MEMBER}"):
        store_float16_weights(path)
    assert path.read_bytes() == original
    assert list(tmp_path.iterdir()) == [path]
