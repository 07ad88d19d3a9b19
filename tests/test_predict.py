"""Predictor on a real photo (skimage's astronaut), batching, pre-aligned input, and the predict CLI."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import skimage.data

from fer_model.errors import ArtifactError, DataError, InvalidInput
from fer_model.predict import FacePrediction

# Eileen Collins' face in the 512x512 astronaut photo spans roughly x 170-280, y 50-190.
FACE_CENTRE_X = (190, 260)
FACE_CENTRE_Y = (80, 170)


@pytest.fixture(scope="module")
def predictor(tiny_model_dir):
    from fer_model.predict import Predictor

    return Predictor(tiny_model_dir)


@pytest.fixture(scope="module")
def astronaut():
    """The astronaut photo as OpenCV BGR, the layout decode_image produces."""
    return np.ascontiguousarray(skimage.data.astronaut()[:, :, ::-1])


@pytest.fixture
def count_model_calls(monkeypatch):
    """Wrap a predictor's model so each forward pass is counted; returns the list of batch sizes."""

    def install(predictor):
        calls = []
        model = predictor._artifact.model
        original = model.predict_on_batch

        def counting(x, *args, **kwargs):
            calls.append(len(x))
            return original(x, *args, **kwargs)

        monkeypatch.setattr(model, "predict_on_batch", counting)
        return calls

    return install


def _assert_probabilities(face, tasks):
    assert set(face.probabilities) == set(tasks)
    for task, classes in tasks.items():
        probs = face.probabilities[task]
        assert list(probs) == list(classes)
        assert all(type(p) is float and 0.0 <= p <= 1.0 for p in probs.values())
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert face.label(task) == classes[int(np.argmax(list(probs.values())))]


def test_astronaut_has_one_face_boxed_over_her_face(predictor, astronaut):
    [faces] = predictor.predict([astronaut])
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert FACE_CENTRE_X[0] <= x + w / 2 <= FACE_CENTRE_X[1]
    assert FACE_CENTRE_Y[0] <= y + h / 2 <= FACE_CENTRE_Y[1]
    assert 60 <= w <= 160
    _assert_probabilities(faces[0], predictor.tasks)


def _same(a, b):
    """Two FacePrediction lists agree (box and alignment exactly, probabilities to float tolerance)."""
    assert len(a) == len(b)
    for fa, fb in zip(a, b, strict=True):
        assert (fa.box, fa.eyes_found, fa.angle) == (fb.box, fb.eyes_found, fb.angle)
        for task in fa.probabilities:
            np.testing.assert_allclose(list(fa.probabilities[task].values()),
                                       list(fb.probabilities[task].values()), atol=1e-5)


def test_batch_equals_separate_calls_and_runs_the_model_once(predictor, astronaut, count_model_calls):
    # A second, different image with the same face elsewhere: the astronaut shifted right and down.
    shifted = np.pad(astronaut, ((40, 0), (60, 0), (0, 0)), mode="edge")
    blank = np.full((120, 160), 128, np.uint8)
    separate = [predictor.predict([img])[0] for img in (astronaut, blank, shifted)]
    calls = count_model_calls(predictor)
    together = predictor.predict([astronaut, blank, shifted])
    assert calls == [2]  # one forward pass carrying both faces
    assert [len(f) for f in together] == [1, 0, 1]
    for joint, alone in zip(together, separate, strict=True):
        _same(joint, alone)
    # The shifted face is reported in its own image's coordinates (detection runs on a downscaled
    # copy whose scale depends on the image size, hence a few pixels of slack).
    (x0, y0, _, _), (x1, y1, _, _) = together[0][0].box, together[2][0].box
    assert abs(x1 - (x0 + 60)) <= 4 and abs(y1 - (y0 + 40)) <= 4


def test_blank_image_has_no_face_and_skips_the_model(predictor, count_model_calls):
    calls = count_model_calls(predictor)
    assert predictor.predict([np.zeros((200, 200, 3), np.uint8)]) == [[]]
    assert predictor.predict([]) == []
    assert calls == []


def test_encoded_bytes_give_the_same_result_as_the_array(predictor, astronaut):
    png = cv2.imencode(".png", astronaut)[1].tobytes()
    _same(predictor.predict([png])[0], predictor.predict([astronaut])[0])


def test_max_faces_per_image_limits_faces(predictor, astronaut):
    # Two astronauts side by side: two faces, the limit keeps one.
    pair = np.concatenate([astronaut, astronaut], axis=1)
    assert len(predictor.predict([pair])[0]) == 2
    assert len(predictor.predict([pair], max_faces_per_image=1)[0]) == 1


@pytest.mark.parametrize(
    ("images", "match"),
    [
        ([b"not an image at all"], "image 0: not a recognised image format"),
        ([np.zeros((10, 10), np.float32)], "image 0: .*uint8"),
        ([np.zeros((10, 10, 2), np.uint8)], "image 0: .*shape"),
        (["a path string"], "image 0 must be encoded bytes or a uint8 array"),
        (np.zeros((2, 50, 50), np.uint8), "sequence of images"),
    ],
)
def test_bad_images_raise_invalid_input(predictor, images, match):
    with pytest.raises(InvalidInput, match=match):
        predictor.predict(images)


def test_predict_aligned_accepts_both_layouts(predictor):
    faces = np.random.default_rng(0).integers(0, 256, (3, 50, 50), dtype=np.uint8)
    flat = predictor.predict_aligned(faces)
    channel = predictor.predict_aligned(faces[..., np.newaxis])
    assert len(flat) == 3
    _same(flat, channel)
    for face in flat:
        assert (face.box, face.eyes_found, face.angle) == (None, False, 0.0)
        _assert_probabilities(face, predictor.tasks)
    assert predictor.predict_aligned(np.zeros((0, 50, 50), np.uint8)) == []


@pytest.mark.parametrize(
    ("faces", "match"),
    [
        (np.zeros((2, 50, 50), np.float32), "uint8"),
        (np.zeros((2, 48, 48), np.uint8), r"shape \[N, 50, 50\]"),
        (np.zeros((50, 50), np.uint8), "shape"),
        (np.zeros((2, 50, 50, 3), np.uint8), "shape"),
        ([[0] * 50] * 50, "numpy array"),
    ],
)
def test_predict_aligned_rejects_bad_input(predictor, faces, match):
    with pytest.raises(InvalidInput, match=match):
        predictor.predict_aligned(faces)


def test_to_dict_follows_the_contract(predictor, astronaut):
    [[face]] = predictor.predict([astronaut])
    d = json.loads(json.dumps(face.to_dict()))  # JSON-serialisable as is
    assert set(d) == {"box", "eyes_found", "angle", "predictions"}
    assert d["box"] == list(face.box)
    assert set(d["predictions"]) == set(predictor.tasks)
    for p in d["predictions"].values():
        assert set(p) == {"label", "probabilities"}
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"box": (1, 2, 3)}, "four ints"),
        ({"box": (1.5, 2, 3, 4)}, "four ints"),
        ({"probabilities": {}}, "at least one task"),
        ({"probabilities": {"emotion": {}}}, "at least one class"),
    ],
)
def test_face_prediction_validates(kwargs, match):
    base = {"box": (0, 0, 10, 10), "eyes_found": True, "angle": 0.0, "probabilities": {"gender": {"male": 1.0}}}
    with pytest.raises(DataError, match=match):
        FacePrediction(**{**base, **kwargs})


def test_face_prediction_is_read_only():
    face = FacePrediction(box=None, eyes_found=False, angle=0.0, probabilities={"gender": {"male": 1.0}})
    with pytest.raises(TypeError):
        face.probabilities["gender"]["male"] = 0.0  # type: ignore[index]


def test_missing_pretrained_model_says_to_pass_model(tmp_path, monkeypatch):
    import fer_model.predict as predict_module

    monkeypatch.setattr(predict_module, "PRETRAINED_DIR", tmp_path / "pretrained")
    with pytest.raises(ArtifactError, match="--model"):
        predict_module.Predictor()


def test_predict_cli_prints_the_api_result(predictor, astronaut, tiny_model_dir, tmp_path, capsys):
    from fer_cli import main
    from fer_model.images import decode_image

    paths = [tmp_path / "astronaut.jpg", tmp_path / "blank.png"]
    cv2.imwrite(str(paths[0]), astronaut)
    cv2.imwrite(str(paths[1]), np.full((80, 80), 200, np.uint8))
    assert main(["predict", *map(str, paths), "--model", str(tiny_model_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    api = predictor.predict([decode_image(p.read_bytes()) for p in paths])
    expected = [{"image": str(p), "faces": [f.to_dict() for f in faces]} for p, faces in zip(paths, api, strict=True)]
    assert printed == expected
    assert len(printed[0]["faces"]) == 1 and printed[1]["faces"] == []


def test_importing_predict_stays_light():
    code = (
        "import sys, fer_model.predict, fer_cli.predict, fer_cli.evaluate;"
        "heavy = {'tensorflow', 'keras', 'cv2'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
