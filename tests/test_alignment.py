"""Face alignment on skimage's astronaut photo rotated by known angles, batches and statistics.

Most tests pin the Haar detector, whose boxes and eye cascade they were measured with; the tests
that hold for any detector run with both. tests/test_face_detector.py covers BlazeFace itself.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

import fer_model.alignment as alignment
from fer_model.alignment import (
    AlignConfig,
    AlignResult,
    FaceAligner,
    align_batch,
    alignment_stats,
    eye_tilt,
    levelling_angle,
)
from fer_model.errors import ConfigError, DataError, FerError

# Found once with the default Haar cascade at full resolution: (x, y, w, h) of her face.
ASTRONAUT_FACE = (177, 66, 95, 95)
FACE_CENTRE = (ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2] / 2, ASTRONAUT_FACE[1] + ASTRONAUT_FACE[3] / 2)
# A generous face crop around it (rows, cols), like a dataset's pre-cropped face.
CROP = (slice(40, 190), slice(150, 300))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(AlignConfig(detector="haar"))


@pytest.fixture(scope="module", params=["haar", "blazeface"])
def any_aligner(request: pytest.FixtureRequest) -> FaceAligner:
    return FaceAligner(AlignConfig(detector=request.param))


def _rotated(image: np.ndarray, degrees: float) -> np.ndarray:
    """The image rotated counter-clockwise about the face centre, same size."""
    matrix = cv2.getRotationMatrix2D(FACE_CENTRE, degrees, 1.0)
    return cv2.warpAffine(image, matrix, image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _align(aligner: FaceAligner, image: np.ndarray, mode: str) -> AlignResult:
    if mode == "crop":
        return aligner.align_crop(image[CROP])
    (result,) = aligner.detect_and_align(image)
    return result


def test_detects_exactly_her_face(astronaut: np.ndarray, any_aligner: FaceAligner) -> None:
    results = any_aligner.detect_and_align(astronaut)
    assert len(results) == 1
    (result,) = results
    assert _iou(result.box, ASTRONAUT_FACE) > 0.7
    assert result.face_found and result.eyes_found and result.error is None
    assert result.face.shape == (50, 50) and result.face.dtype == np.uint8
    (lx, ly), (rx, ry) = result.eyes
    # Eyes sit in the upper half of the box, her right eye on the image left.
    x, y, w, h = result.box
    assert x < lx < x + w / 2 < rx < x + w and y < min(ly, ry) and max(ly, ry) < y + h / 2


@pytest.mark.parametrize("mode", ["detect", "crop"])
@pytest.mark.parametrize("degrees", [-8, -4, 0, 4, 8])
def test_eye_line_rotation_is_recovered(astronaut: np.ndarray, aligner: FaceAligner, mode: str, degrees: int) -> None:
    # She tilts her head a little already: measure against the unrotated photo.
    base = eye_tilt(*_align(aligner, astronaut, mode).eyes)
    result = _align(aligner, _rotated(astronaut, degrees), mode)
    assert result.eyes_found
    tilt = eye_tilt(*result.eyes)
    assert abs((tilt - base) - degrees) < 2.0
    # The applied rotation undoes the measured tilt, within the 10 degree cap.
    assert result.angle == pytest.approx(-np.clip(tilt, -10, 10))


def test_levelled_face_matches_upright_face(astronaut: np.ndarray, aligner: FaceAligner) -> None:
    plain = FaceAligner(AlignConfig(eye_alignment=False))
    upright = aligner.align_crop(astronaut[CROP]).face.astype(float)
    tilted = _rotated(astronaut, 8)[CROP]

    def corr(face: np.ndarray) -> float:
        return float(np.corrcoef(face.astype(float).ravel(), upright.ravel())[0, 1])

    # Rotating the wrong way would double the tilt and fall below the unaligned face.
    assert corr(aligner.align_crop(tilted).face) > corr(plain.align_crop(tilted).face) + 0.05


@pytest.mark.parametrize("degrees", [20, -20])
def test_large_tilt_is_capped_at_max_angle(astronaut: np.ndarray, aligner: FaceAligner, degrees: int) -> None:
    result = aligner.align_crop(_rotated(astronaut, degrees)[CROP])
    assert result.eyes_found and abs(eye_tilt(*result.eyes)) > 12
    assert result.angle == -np.sign(degrees) * 10.0


@pytest.mark.parametrize(
    ("tilt", "max_angle", "expected"),
    [(3.0, 10.0, -3.0), (15.0, 10.0, -10.0), (-25.0, 10.0, 10.0), (0.0, 10.0, 0.0), (-4.0, 2.5, 2.5)],
)
def test_levelling_angle_negates_and_caps(tilt: float, max_angle: float, expected: float) -> None:
    assert levelling_angle(tilt, max_angle) == expected


def test_eye_tilt_is_counter_clockwise_positive() -> None:
    assert eye_tilt((0.0, 10.0), (10.0, 0.0)) == pytest.approx(45.0)  # right eye higher
    assert eye_tilt((0.0, 0.0), (10.0, 10.0)) == pytest.approx(-45.0)


def test_without_eye_alignment_only_crops_and_resizes(astronaut: np.ndarray) -> None:
    crop = astronaut[CROP]
    result = FaceAligner(AlignConfig(eye_alignment=False)).align_crop(crop)
    assert result.angle == 0.0 and not result.eyes_found and result.box == (0, 0, 150, 150)
    expected = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), (50, 50), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(result.face, expected)


def test_non_square_crop_uses_its_centred_square(astronaut: np.ndarray, aligner: FaceAligner) -> None:
    result = aligner.align_crop(astronaut[40:190, 120:330])  # 150 x 210
    assert result.box == (30, 0, 150, 150) and result.face.shape == (50, 50)


def test_blank_image_has_no_face(any_aligner: FaceAligner) -> None:
    assert any_aligner.detect_and_align(np.full((480, 640, 3), 128, np.uint8)) == []


def test_faces_come_largest_first_and_max_faces_limits(astronaut: np.ndarray, aligner: FaceAligner) -> None:
    canvas = np.full((512, 896, 3), 255, np.uint8)
    canvas[:, :512] = astronaut
    canvas[:384, 512:] = cv2.resize(astronaut, (384, 384), interpolation=cv2.INTER_AREA)
    results = aligner.detect_and_align(canvas)
    assert [r.box[0] < 512 for r in results] == [True, False]
    assert results[0].box[2] > results[1].box[2]
    assert len(aligner.detect_and_align(canvas, max_faces=1)) == 1
    with pytest.raises(ConfigError, match="`max_faces` must be >= 1"):
        aligner.detect_and_align(canvas, max_faces=0)


def test_bad_array_raises_data_error(any_aligner: FaceAligner) -> None:
    with pytest.raises(DataError, match="must be uint8"):
        any_aligner.align_crop(np.zeros((48, 48), np.float64))
    with pytest.raises(DataError, match="must be uint8"):
        any_aligner.detect_and_align(np.zeros((48, 48), np.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_angle": 90}, r"`max_angle` must be in \[0, 45\], got 90"),
        ({"size": 0}, r"`size` must be in \[8, 1024\], got 0"),
        ({"scale_factor": 1.0}, r"`scale_factor` must be in \(1, 2\], got 1.0"),
        ({"face_cascade": "lbp"}, "`face_cascade` must be one of"),
        ({"detect_max_side": 10}, "`detect_max_side` must be in"),
        ({"crop_scale": 3.0}, "`crop_scale` must be in"),
        ({"detector": "yunet"}, r"`detector` must be one of \['blazeface', 'haar'\], got 'yunet'"),
        ({"blazeface_model": "long"}, "`blazeface_model` must be one of"),
        ({"crop_eyes": "dlib"}, r"`crop_eyes` must be one of \['blazeface', 'haar'\], got 'dlib'"),
    ],
)
def test_config_is_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        AlignConfig(**kwargs)


def test_config_round_trips_through_dict() -> None:
    config = AlignConfig(size=48, max_angle=5.0, eye_alignment=False)
    assert AlignConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown AlignConfig settings \['colour'\]"):
        AlignConfig.from_dict({"colour": True})


def test_missing_cascades_say_how_to_fix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(alignment.cv2.data, "haarcascades", str(tmp_path))
    with pytest.raises(FerError, match="opencv-python-headless<5"):
        FaceAligner()


def _batch_inputs(astronaut: np.ndarray) -> tuple[list, list[bool]]:
    jpeg = cv2.imencode(".jpg", astronaut[CROP])[1].tobytes()
    full = cv2.imencode(".png", astronaut)[1].tobytes()
    images = [jpeg, b"not an image", astronaut[CROP], jpeg[: len(jpeg) // 2], full, np.zeros((300, 300), np.uint8)]
    return images, [True, True, True, True, False, False]


def test_align_batch_keeps_order_and_marks_errors(astronaut: np.ndarray) -> None:
    images, crops = _batch_inputs(astronaut)
    results = align_batch(images, is_face_crop=crops, config=AlignConfig())
    assert len(results) == len(images)
    ok = [r.face is not None for r in results]
    assert ok == [True, False, True, False, True, False]
    assert "not a recognised image" in results[1].error
    assert "truncated" in results[3].error
    assert results[5].error == "no face detected" and not results[5].face_found
    assert _iou(results[4].box, ASTRONAUT_FACE) > 0.7
    # Decoded bytes and the array they came from align alike (JPEG loss aside).
    assert abs(results[0].angle - results[2].angle) < 2.0


def test_align_batch_two_workers_match_one(astronaut: np.ndarray) -> None:
    images, crops = _batch_inputs(astronaut)
    one = align_batch(images, is_face_crop=crops, workers=1)
    two = align_batch(images, is_face_crop=crops, workers=2, chunk_size=2)
    for a, b in zip(one, two, strict=True):
        assert (a.box, a.angle, a.eyes_found, a.error) == (b.box, b.angle, b.eyes_found, b.error)
        assert (a.face is None and b.face is None) or np.array_equal(a.face, b.face)


def test_align_batch_validates_arguments(astronaut: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="`is_face_crop` has 1 values for 2 images"):
        align_batch([astronaut, astronaut], is_face_crop=[True])
    with pytest.raises(ConfigError, match="`workers` must be >= 1"):
        align_batch([astronaut], is_face_crop=True, workers=0)


def test_alignment_stats_counts_and_bins() -> None:
    face = np.zeros((50, 50), np.uint8)

    def ok(angle: float, eyes: bool = True) -> AlignResult:
        return AlignResult(face=face, box=(0, 0, 50, 50), face_found=True, eyes_found=eyes, angle=angle)

    results = [ok(-10.0), ok(-3.0), ok(0.5), ok(10.0), ok(0.0, eyes=False), AlignResult.failed("no face detected")]
    stats = alignment_stats(results)
    assert stats["rotation_histogram"]["edges"] == [float(e) for e in range(-10, 11, 2)]
    assert stats["rotation_histogram"]["counts"] == [1, 0, 0, 1, 0, 1, 0, 0, 0, 1]
    assert (stats["total"], stats["aligned"], stats["faces_found"], stats["eyes_found"]) == (6, 5, 5, 4)
    assert stats["capped"] == 2 and stats["errors"] == 1
    assert stats["error_reasons"] == {"no face detected": 1}
    assert stats["mean_abs_angle"] == pytest.approx(23.5 / 4)


# --- face crops' eyes from BlazeFace keypoints ------------------------------------------------


def _drawn_crops(n: int, *, size: int = 96) -> list[tuple[np.ndarray, np.ndarray]]:
    """Synthetic gray face crops (sample_data's faces: a few degrees of tilt each) and their eye centres."""
    from fer_model.sample_data import _faces, render_face

    rng = np.random.default_rng(5)
    return [(image, landmarks[:2]) for image, landmarks in
            (render_face(face, rng, size=size, gray=True) for face in _faces(rng, n))]


@pytest.fixture(scope="module")
def keypoint_aligner() -> FaceAligner:
    return FaceAligner(AlignConfig(crop_eyes="blazeface"))


def test_crop_eyes_default_to_haar() -> None:
    assert AlignConfig().crop_eyes == "haar"  # the shipped model was trained on Haar-levelled crops
    assert FaceAligner()._crop_detector is None


def test_blazeface_crop_eyes_find_drawn_eyes_and_level_them(keypoint_aligner: FaceAligner) -> None:
    for image, (left, right) in _drawn_crops(6):
        result = keypoint_aligner.align_crop(image)
        assert result.eyes_found and result.box == (0, 0, 96, 96)
        gap = right[0] - left[0]
        for got, want in zip(result.eyes, (left, right), strict=True):
            assert np.hypot(got[0] - want[0], got[1] - want[1]) < 0.25 * gap
        # The rotation levels the drawn eye line (within the keypoints' scatter).
        assert result.angle == pytest.approx(levelling_angle(eye_tilt(left, right), 10.0), abs=3.0)


@pytest.mark.parametrize("degrees", [-8, 8])
def test_blazeface_crop_eyes_undo_a_known_rotation(degrees: int) -> None:
    aligner = FaceAligner(AlignConfig(crop_eyes="blazeface", max_angle=45))  # no cap in the way
    image, _ = _drawn_crops(4)[0]
    upright = aligner.align_crop(image).angle
    turned = cv2.warpAffine(image, cv2.getRotationMatrix2D((48, 48), degrees, 1.0), (96, 96),
                            borderMode=cv2.BORDER_REPLICATE)
    result = aligner.align_crop(turned)
    assert result.eyes_found
    # Turning the face counter-clockwise by `degrees` tilts its eye line by as much: levelled back
    # (within the scatter of keypoints on a 96 px drawing).
    assert result.angle == pytest.approx(upright - degrees, abs=3.0)


def test_blazeface_crop_without_a_face_is_cropped_unrotated(keypoint_aligner: FaceAligner) -> None:
    blank = np.full((48, 48), 128, np.uint8)
    result = keypoint_aligner.align_crop(blank)
    assert not result.eyes_found and result.eyes is None and result.angle == 0.0
    np.testing.assert_array_equal(result.face, cv2.resize(blank, (50, 50), interpolation=cv2.INTER_LINEAR))


def test_implausible_keypoint_eyes_are_refused() -> None:
    box = (0, 0, 100, 100)
    assert alignment._plausible_eyes(((30.0, 40.0), (70.0, 42.0)), box)
    assert not alignment._plausible_eyes(((48.0, 40.0), (52.0, 40.0)), box)  # one eye, twice
    assert not alignment._plausible_eyes(((30.0, 20.0), (70.0, 60.0)), box)  # 45 degrees
    assert not alignment._plausible_eyes(((5.0, 40.0), (40.0, 40.0)), box)  # off the face's centre line
    assert not alignment._plausible_eyes(((30.0, 80.0), (70.0, 80.0)), box)  # the mouth's height


def test_pool_reuses_its_workers_across_batches(astronaut: np.ndarray) -> None:
    images = [astronaut[CROP]] * 4
    with alignment.AlignPool(AlignConfig(detector="haar"), workers=2) as pool:
        first = pool.align(images, is_face_crop=True, chunk_size=1)
        executor = pool._executor
        second = pool.align(images, is_face_crop=True, chunk_size=1)
        assert pool._executor is executor is not None
    assert pool._executor is None
    assert [r.angle for r in first] == [r.angle for r in second]
