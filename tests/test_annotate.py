"""Annotated pictures: boxes and labels drawn on the photo (fer_model.annotate, `fer-mtl predict --annotate`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from fer_model.annotate import annotate, check_output, label_lines, write_annotated
from fer_model.errors import ConfigError, DataError
from fer_model.predict import FacePrediction

PROBS = {
    "emotion": {
        "surprise": 0.05, "fear": 0.05, "disgust": 0.0, "happy": 0.8, "sad": 0.05, "angry": 0.0, "neutral": 0.05,
    },
    "gender": {"male": 0.3, "female": 0.7, "unsure": 0.0},
    "race": {"caucasian": 0.6, "african_american": 0.2, "asian": 0.2},
    "age": {"0-3": 0.0, "4-19": 0.1, "20-39": 0.7, "40-69": 0.2, "70+": 0.0},
}


def _face(box: tuple[int, int, int, int] | None) -> FacePrediction:
    return FacePrediction(box=box, eyes_found=True, angle=0.0, probabilities=PROBS)


def _changed(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Boolean HxW: where any channel differs."""
    return np.any(before != after, axis=2)


def _outside(mask: np.ndarray, box: tuple[int, int, int, int], margin_x: int, margin_y: int) -> int:
    """Changed pixels farther than the margins from the box."""
    x, y, w, h = box
    keep = np.zeros_like(mask)
    keep[max(0, y - margin_y) : y + h + margin_y, max(0, x - margin_x) : x + w + margin_x] = True
    return int(np.count_nonzero(mask & ~keep))


def test_labels_name_each_task_top_class_and_probability() -> None:
    assert label_lines(_face((0, 0, 10, 10))) == [
        "emotion: happy 80%", "gender: female 70%", "race: caucasian 60%", "age: 20-39 70%",
    ]  # fmt: skip


@pytest.mark.parametrize("gray", [False, True])
def test_drawing_stays_near_the_face(gray: bool) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(400, 600) if gray else (400, 600, 3), dtype=np.uint8)
    box = (200, 100, 120, 120)
    out = annotate(image, [_face(box)])
    assert out.shape == (400, 600, 3) and out.dtype == np.uint8
    before = np.repeat(image[:, :, None], 3, axis=2) if gray else image
    changed = _changed(before, out)
    x, y, w, h = box
    assert changed[y, x : x + w].all() and changed[y : y + h, x].all()  # the box's top and left edges
    assert changed[y + h : y + h + 20, x : x + w].mean() > 0.5  # the label panel under the box
    assert _outside(changed, box, margin_x=w, margin_y=h) == 0
    assert not np.shares_memory(out, image)


def test_label_panel_goes_above_a_face_at_the_bottom_edge() -> None:
    image = np.full((300, 300, 3), 200, np.uint8)
    box = (100, 200, 100, 100)
    changed = _changed(image, annotate(image, [_face(box)]))
    assert changed[180:200, 100:200].mean() > 0.5
    assert _outside(changed, box, margin_x=100, margin_y=100) == 0


def test_faces_without_a_box_are_not_drawn() -> None:
    image = np.full((50, 50), 7, np.uint8)
    assert (annotate(image, [_face(None)]) == 7).all()


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4), np.float32)])
def test_annotate_refuses_what_is_not_an_image(bad: np.ndarray) -> None:
    with pytest.raises(DataError, match="image to annotate must be"):
        annotate(bad, [])


def test_write_refuses_an_extension_opencv_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"out\.gif: use one of \.jpg"):
        check_output(tmp_path / "out.gif")


@pytest.mark.parametrize("suffix", [".png", ".JPG"])
def test_write_annotated_writes_a_decodable_image(tmp_path: Path, suffix: str) -> None:
    from PIL import Image

    image = np.full((120, 160, 3), 90, np.uint8)
    out = write_annotated(tmp_path / "sub" / f"out{suffix}", image, [_face((40, 20, 50, 50))])
    with Image.open(out) as written:
        assert written.size == (160, 120)
        assert written.format == ("PNG" if suffix == ".png" else "JPEG")
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left


def _astronaut_jpeg(path: Path) -> np.ndarray:
    from PIL import Image
    from skimage import data

    rgb = data.astronaut()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=92)
    path.write_bytes(buffer.getvalue())
    from fer_model.images import decode_image

    return decode_image(buffer.getvalue())


def test_predict_cli_writes_the_annotated_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from fer_cli import main

    photo = tmp_path / "astronaut.jpg"
    decoded = _astronaut_jpeg(photo)
    out = tmp_path / "annotated.png"
    assert main(["predict", str(photo), "--annotate", str(out)]) == 0
    ((result,),) = [json.loads(capsys.readouterr().out)]
    (face,) = result["faces"]
    with Image.open(out) as written:
        assert written.size == (decoded.shape[1], decoded.shape[0])
        drawn = np.asarray(written.convert("RGB"))[:, :, ::-1]
    box = tuple(face["box"])
    changed = _changed(decoded, drawn)
    x, y, w, h = box
    assert changed[y, x : x + w].mean() > 0.9  # the box's top edge
    assert _outside(changed, box, margin_x=w, margin_y=h) == 0


@pytest.mark.parametrize(
    ("images", "out", "reason"),
    [(["a.jpg", "b.jpg"], "out.jpg", "--annotate writes one picture"), (["a.jpg"], "out.gif", "use one of .jpg")],
)
def test_predict_cli_refuses_before_loading_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], images: list[str], out: str, reason: str
) -> None:
    from fer_cli import main

    assert main(["predict", *images, "--annotate", str(tmp_path / out)]) != 0
    assert reason in capsys.readouterr().err
    assert not (tmp_path / out).exists()


def test_predict_cli_flip_average_is_the_predictors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fer_cli import main
    from fer_model.predict import Predictor

    photo = tmp_path / "astronaut.jpg"
    _astronaut_jpeg(photo)
    assert main(["predict", str(photo)]) == 0
    ((plain,),) = [json.loads(capsys.readouterr().out)]
    assert main(["predict", str(photo), "--flip-average"]) == 0
    ((flipped,),) = [json.loads(capsys.readouterr().out)]
    (expected,) = Predictor(flip_average=True).predict([photo.read_bytes()])
    (face,) = flipped["faces"]
    assert face["box"] == plain["faces"][0]["box"] == list(expected[0].box)
    emotion = face["predictions"]["emotion"]["probabilities"]
    assert emotion == pytest.approx(expected[0].probabilities["emotion"], abs=1e-6)
    assert emotion != pytest.approx(plain["faces"][0]["predictions"]["emotion"]["probabilities"], abs=1e-6)
