"""Face alignment: face and eye detection, eye levelling (capped), square crop, size x size gray.

Faces are found by BlazeFace (`fer_model.face_detector`, its eye keypoints level the face) or by
OpenCV's Haar cascades (a second cascade finds the eyes); `AlignConfig.detector` chooses. Face crops
(`align_crop`) skip face detection and find their eyes as `AlignConfig.crop_eyes` says: the Haar eye
cascade (the default, what the shipped model was trained on) or BlazeFace's eye keypoints, so
datasets prepared from crops do not depend on the detector used on photos.

Angles follow OpenCV: degrees, positive = counter-clockwise as the image is displayed. The eye line
tilt of a face is measured from the image-left eye to the image-right eye; the face is levelled by
rotating it by minus that tilt, clipped to [-max_angle, max_angle] as in the paper, so a wrong eye
pair can never turn a face far. `AlignResult.angle` is the rotation actually applied.

Haar detects full images on a downscaled copy (longest side `detect_max_side`): Haar detection at
full resolution is the serving bottleneck, and faces large enough to classify survive the downscale.
BlazeFace boxes are mapped onto the Haar box geometry (`_HAAR_LIKE`), so a face is cropped the same
way whichever detector found it, and a model trained on one detector's crops serves with the other.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import typing
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

from fer_model._settings import Settings, check_bool, is_number
from fer_model.errors import ConfigError, DataError, FerError
from fer_model.face_detector import DETECTORS, BlazeFaceDetector, Detection, DetectorName
from fer_model.images import DEFAULT_MAX_PIXELS, decode_image, to_gray

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
Point = tuple[float, float]

_FACE_CASCADES = {"default": "haarcascade_frontalface_default.xml", "alt2": "haarcascade_frontalface_alt2.xml"}
_EYE_CASCADES = {"eye": "haarcascade_eye.xml", "eyeglasses": "haarcascade_eye_tree_eyeglasses.xml"}

# Where eyes may lie inside a face box, as fractions of its height: Haar face boxes put the eye
# line at ~0.38, a face crop (FER2013, UTKFace) at 0.3-0.5.
_EYE_BAND = (0.1, 0.65)
# Finer than the face pyramid: eye centres come from box centres, and a coarse pyramid costs ~8% of
# the eye pairs found on FER2013 and up to a degree of angle precision.
_EYE_SCALE_FACTOR = 1.05
# A pair steeper than this is not two eyes (an eye and an eyebrow, a nostril...).
_MAX_PAIR_TILT = 35.0
_BLAZEFACE_MODELS = {"short": "short range", "full": "full range", "auto": "short, then full if none",
                     "both": "short and full, merged"}
# Two detections (Haar-like boxes) overlapping more than this are one face ("both" models).
_SAME_FACE_IOU = 0.3
# BlazeFace box -> the Haar box of the same face: (side scale, centre shift down in box sides).
# Medians over 748 (short) and 742 (full) UTKFace faces, pasted at 160 and 240 px into a 640x480
# frame, that both detectors found alone; interquartile ranges 0.12 in scale and 0.05 in shift, the
# spread of Haar boxes themselves. benchmarks/bench_detection.py re-measures them (at 200 px:
# 1.103 / -0.132 short, 1.052 / -0.065 full).
_HAAR_LIKE = {"short": (1.106, -0.129), "full": (1.054, -0.054)}
#: How `align_crop` finds the eyes of a face crop.
CropEyes = Literal["haar", "blazeface"]
CROP_EYES: tuple[str, ...] = typing.get_args(CropEyes)


@dataclass(frozen=True)
class AlignConfig(Settings):
    """How faces are found, levelled and cropped.

    Detection cost is set by the smallest face searched for (the first, largest pyramid levels)
    and the pyramid step, more than by image size: the defaults (48 px, step 1.2, on a 400 px copy)
    cut face detection on a 640x480 frame ~3x against full resolution, step 1.1, 50 px, and
    still find a 78 px face in an 896 px wide photo (a 320 px copy with step 1.2 misses it).

    Attributes:
        detector: "blazeface" (MediaPipe BlazeFace, its eye keypoints level the face; 8x faster
            than Haar on a 640x480 image, and finds a face in 99% of UTKFace and 90% of FER2013
            crops where Haar finds 29% and 33%: benchmarks/bench_detection.py) or "haar".
        blazeface_model: "short" (faces from ~1/8 of the frame up, fastest), "full" (smaller faces,
            misses faces that fill the frame), "auto" (short, then full when short finds none: the
            speed of short for one face, the range of full for a lone small one) or "both" (both
            models, merged: small faces next to large ones, as in group photos; ~3x the cost).
        size: Side of the square gray output, pixels.
        max_angle: Largest rotation applied to level the eyes, degrees (the paper uses 10).
        eye_alignment: Level the eyes; False only crops and resizes (for on/off comparisons).
        face_cascade: Haar detector: OpenCV frontal face cascade: "alt2" (fewer false faces than "default" on
            the astronaut test photo at the same speed) or "default".
        eye_cascade: "eye" or "eyeglasses" (haarcascade_eye_tree_eyeglasses, slower).
        min_face_size: Smallest face to detect in a full image, pixels of the original image
            (for BlazeFace, of its Haar-like box).
        scale_factor: Haar pyramid step for face detection (> 1; larger is faster, coarser).
        min_neighbors: Haar: overlapping detections a face needs (higher: fewer false faces).
        detect_max_side: Haar: full images are downscaled to this longest side for face detection;
            0 detects at full resolution.
        eye_search_width: The face box is resized to this width before eye detection, so eye
            sizes are the same whatever the input resolution (48 px FER2013 or a 300 px box).
        eye_min_neighbors: Overlapping detections an eye needs.
        crop_scale: Side of the crop relative to the detected face box (1.0 = the Haar box,
            a tight forehead-to-chin crop like FER2013's). Face-crop inputs are used whole.
        crop_eyes: How face crops (FER2013, UTKFace) find their eyes: "haar" (the eye cascade; the
            shipped model was trained on these crops) or "blazeface" (the short-range model's eye
            keypoints, mirrored pass averaged in: 2.7 ms CPU per FER2013 crop against Haar's ~12,
            eyes found in 87% of FER2013 crops against 63%: benchmarks/bench_prepare.py). A crop
            whose eyes are not found, or implausible, is cropped unrotated either way.
    """

    detector: DetectorName = "blazeface"
    blazeface_model: Literal["short", "full", "auto", "both"] = "auto"
    size: int = 50
    max_angle: float = 10.0
    eye_alignment: bool = True
    face_cascade: Literal["default", "alt2"] = "alt2"
    eye_cascade: Literal["eye", "eyeglasses"] = "eye"
    min_face_size: int = 48
    scale_factor: float = 1.2
    min_neighbors: int = 5
    detect_max_side: int = 400
    eye_search_width: int = 160
    eye_min_neighbors: int = 3
    crop_scale: float = 1.0
    crop_eyes: CropEyes = "haar"

    def __post_init__(self) -> None:
        _check_choice("detector", self.detector, DETECTORS)
        _check_choice("blazeface_model", self.blazeface_model, _BLAZEFACE_MODELS)
        _check_range("size", self.size, 8, 1024)
        _check_range("max_angle", self.max_angle, 0, 45)
        check_bool("eye_alignment", self.eye_alignment)
        _check_choice("face_cascade", self.face_cascade, _FACE_CASCADES)
        _check_choice("eye_cascade", self.eye_cascade, _EYE_CASCADES)
        _check_range("min_face_size", self.min_face_size, 8, 4096)
        if not 1.0 < self.scale_factor <= 2.0:
            raise ConfigError(f"`scale_factor` must be in (1, 2], got {self.scale_factor}")
        _check_range("min_neighbors", self.min_neighbors, 0, 50)
        if self.detect_max_side != 0:
            _check_range("detect_max_side", self.detect_max_side, 64, 10_000)
        _check_range("eye_search_width", self.eye_search_width, 48, 1024)
        _check_range("eye_min_neighbors", self.eye_min_neighbors, 0, 50)
        _check_range("crop_scale", self.crop_scale, 0.5, 2.0)
        _check_choice("crop_eyes", self.crop_eyes, CROP_EYES)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not is_number(value) or not low <= value <= high:
        raise ConfigError(f"`{name}` must be in [{low}, {high}], got {value!r}")


def _check_choice(name: str, value: str, choices: Collection[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"`{name}` must be one of {sorted(choices)}, got {value!r}")


@dataclass(frozen=True, eq=False)
class AlignResult:
    """One aligned face, or why there is none.

    Attributes:
        face: uint8 [size, size] gray, or None when `error` is set.
        box: (x, y, w, h) of the face in the input image (the whole square for face crops).
        face_found: A face was detected (always True for a decoded face crop).
        eyes_found: Both eyes were found, so `angle` levels them.
        angle: Rotation applied, degrees, counter-clockwise positive; 0 without eyes.
        error: Why there is no face (undecodable input, no face detected); None otherwise.
        eyes: Image-left and image-right eye centres (x, y) in input coordinates, when found.
    """

    face: np.ndarray | None
    box: Box | None
    face_found: bool
    eyes_found: bool
    angle: float
    error: str | None = None
    eyes: tuple[Point, Point] | None = None

    @classmethod
    def failed(cls, reason: str, *, face_found: bool = False) -> AlignResult:
        return cls(face=None, box=None, face_found=face_found, eyes_found=False, angle=0.0, error=reason)


def eye_tilt(left: Point, right: Point) -> float:
    """Tilt of the line from the image-left to the image-right eye, degrees, counter-clockwise positive."""
    # Image y grows downwards, so a counter-clockwise tilt raises the right eye (smaller y).
    return math.degrees(math.atan2(left[1] - right[1], right[0] - left[0]))


def levelling_angle(tilt: float, max_angle: float) -> float:
    """The rotation that levels an eye line of `tilt` degrees, clipped to [-max_angle, max_angle]."""
    return float(-min(max(tilt, -max_angle), max_angle)) + 0.0  # + 0.0: no negative zero


def _load_cascade(filename: str) -> cv2.CascadeClassifier:
    base = getattr(getattr(cv2, "data", None), "haarcascades", None)
    path = os.path.join(base or "", filename)
    if not hasattr(cv2, "CascadeClassifier") or base is None or not os.path.isfile(path):
        raise FerError(
            f"OpenCV {cv2.__version__} ships no Haar cascade {filename!r} (opencv 5.x dropped them); "
            "install opencv-python-headless<5"
        )
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FerError(f"Haar cascade {path} failed to load; reinstall opencv-python-headless<5")
    return cascade


class FaceAligner:
    """Detects, levels and crops faces; build one per process (it holds loaded cascades and models).

    Safe to call from several threads with the BlazeFace detector (one interpreter per thread);
    OpenCV's cascades are thread-safe for detection.
    """

    def __init__(self, config: AlignConfig | None = None) -> None:
        self.config = config or AlignConfig()
        self._faces = _load_cascade(_FACE_CASCADES[self.config.face_cascade])
        self._eyes = _load_cascade(_EYE_CASCADES[self.config.eye_cascade])
        # The interpreters load on first use: aligning face crops never needs them.
        self._blazeface: list[tuple[str, BlazeFaceDetector]] = []
        if self.config.detector == "blazeface":
            model = self.config.blazeface_model
            names = ("short", "full") if model in ("auto", "both") else (model,)
            self._blazeface = [(name, BlazeFaceDetector(model=name)) for name in names]
        # A face crop fills the frame: the short-range model sees it. With the mirrored pass (1.4 ->
        # 2.7 ms CPU per FER2013 crop) the median eye-line disagreement with Haar, where both find
        # eyes, falls from 4.2 to 3.0 degrees on FER2013 and from 2.8 to 1.8 on UTKFace: steadier.
        self._crop_detector = (BlazeFaceDetector(model="short", flip_eyes=True)
                               if self.config.crop_eyes == "blazeface" else None)

    def align_crop(self, image: np.ndarray) -> AlignResult:
        """Align an image that is already a face crop: no face detection, eyes still levelled.

        A non-square crop is reduced to its centred square.
        """
        gray = to_gray(image)
        h, w = gray.shape
        side = min(h, w)
        box = ((w - side) // 2, (h - side) // 2, side, side)
        if self._crop_detector is None or not self.config.eye_alignment:
            return self._align(gray, box, crop_box=box)
        return self._level_and_crop(gray, box, crop_box=box, eyes=self._crop_keypoint_eyes(gray, box))

    def _crop_keypoint_eyes(self, gray: np.ndarray, box: Box) -> tuple[Point, Point] | None:
        """BlazeFace's eyes of the largest face in the crop whose eyes are plausible, or None."""
        assert self._crop_detector is not None
        x, y, side, _ = box
        for detection in self._crop_detector.detect(gray[y : y + side, x : x + side]):
            (lx, ly), (rx, ry) = detection.eyes
            eyes = ((lx + x, ly + y), (rx + x, ry + y))
            if _plausible_eyes(eyes, box):
                return eyes
        return None

    def detect_faces(self, image: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in input coordinates, largest first."""
        return [box for box, _ in self._detect(image, to_gray(image))]

    def detect_and_align(self, image: np.ndarray, *, max_faces: int | None = None) -> list[AlignResult]:
        """Every face of a full image, aligned, largest first; empty when there is none."""
        if max_faces is not None and max_faces < 1:
            raise ConfigError(f"`max_faces` must be >= 1 or None, got {max_faces}")
        gray = to_gray(image)
        faces = self._detect(image, gray)[:max_faces]
        return [self._align(gray, box, crop_box=self._crop_box(box), eyes=eyes) for box, eyes in faces]

    def find_eyes(self, gray: np.ndarray, box: Box) -> tuple[Point, Point] | None:
        """The most plausible (image-left, image-right) eye centres inside a face box, or None."""
        bx, by, bw, bh = box
        h, w = gray.shape
        x0, x1 = max(bx, 0), min(bx + bw, w)
        y0, y1 = max(by + int(_EYE_BAND[0] * bh), 0), min(by + int(math.ceil(_EYE_BAND[1] * bh)), h)
        if x1 - x0 < 8 or y1 - y0 < 4:
            return None
        # Resize the band so the face is `eye_search_width` wide: eye sizes then do not depend
        # on the input resolution, and a 48 px FER2013 eye (~10 px) exceeds the 20 px Haar window.
        scale = self.config.eye_search_width / bw
        band = gray[y0:y1, x0:x1]
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        band = cv2.resize(band, (round((x1 - x0) * scale), round((y1 - y0) * scale)), interpolation=interp)
        band = cv2.equalizeHist(band)
        width = self.config.eye_search_width
        # Eyes span 8-35% of the face width; a larger maxSize cost ~40% more time and found no
        # more pairs on 400 FER2013 and 200 UTKFace crops.
        found = self._eyes.detectMultiScale(
            band,
            scaleFactor=_EYE_SCALE_FACTOR,
            minNeighbors=self.config.eye_min_neighbors,
            minSize=(int(0.08 * width), int(0.08 * width)),
            maxSize=(int(0.35 * width), int(0.35 * width)),
        )
        candidates = [
            (float(x0 + (ex + ew / 2) / scale), float(y0 + (ey + eh / 2) / scale), float(ew / scale))
            for ex, ey, ew, eh in found
        ]
        return _best_pair(candidates, box)

    def _detect(self, image: np.ndarray, gray: np.ndarray) -> list[tuple[Box, tuple[Point, Point] | None]]:
        """(box, eyes or None) per face, largest first, from the configured detector."""
        if not self._blazeface:
            return [(box, None) for box in self._detect_haar(gray)]
        found: list[tuple[Box, tuple[Point, Point]]] = []
        for name, detector in self._blazeface:
            if found and self.config.blazeface_model == "auto":
                break  # the full-range model runs only when the short-range one found nothing
            for detection in detector.detect(image):
                box, eyes = _haar_like(detection, name)
                # A face both models found keeps the short-range box (it runs first).
                if box[2] >= self.config.min_face_size and all(_iou(box, b) <= _SAME_FACE_IOU for b, _ in found):
                    found.append((box, eyes))
        return sorted(found, key=lambda f: (-f[0][2] * f[0][3], f[0][1], f[0][0]))

    def _detect_haar(self, gray: np.ndarray) -> list[Box]:
        cfg = self.config
        h, w = gray.shape
        scale = min(1.0, cfg.detect_max_side / max(h, w)) if cfg.detect_max_side else 1.0
        small = (
            gray
            if scale == 1.0
            # max(1, ...): a 1x2000 strip would otherwise shrink to 0 px, which cv2.resize refuses
            else cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        )
        min_side = max(1, round(cfg.min_face_size * scale))
        found = self._faces.detectMultiScale(
            small, scaleFactor=cfg.scale_factor, minNeighbors=cfg.min_neighbors, minSize=(min_side, min_side)
        )
        boxes = [
            (int(round(x / scale)), int(round(y / scale)), int(round(bw / scale)), int(round(bh / scale)))
            for x, y, bw, bh in found
        ]
        return sorted(boxes, key=lambda b: (-b[2] * b[3], b[1], b[0]))

    def _crop_box(self, box: Box) -> Box:
        x, y, w, h = box
        side = round(max(w, h) * self.config.crop_scale)
        return (round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side, side)

    def _align(self, gray: np.ndarray, box: Box, *, crop_box: Box, eyes: tuple[Point, Point] | None = None
               ) -> AlignResult:
        """Level and crop one face; `eyes` from the detector, else the Haar eye cascade looks for them."""
        cfg = self.config
        if not cfg.eye_alignment:
            eyes = None
        elif eyes is None:
            eyes = self.find_eyes(gray, box)
        return self._level_and_crop(gray, box, crop_box=crop_box, eyes=eyes)

    def _level_and_crop(self, gray: np.ndarray, box: Box, *, crop_box: Box, eyes: tuple[Point, Point] | None
                        ) -> AlignResult:
        cfg = self.config
        angle = levelling_angle(eye_tilt(*eyes), cfg.max_angle) if eyes else 0.0
        face = _rotate_crop(gray, crop_box, angle=angle, size=cfg.size)
        return AlignResult(
            face=face, box=box, face_found=True, eyes_found=eyes is not None, angle=angle, error=None, eyes=eyes
        )


def _haar_like(detection: Detection, model: str) -> tuple[Box, tuple[Point, Point]]:
    """A BlazeFace detection as (the Haar-like box of its face, its eyes)."""
    scale, shift = _HAAR_LIKE[model]
    x, y, w, h = detection.box
    side = max(w, h) * scale
    cx, cy = x + w / 2, y + h / 2 + shift * max(w, h)
    box = (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)), int(round(side)))
    return box, detection.eyes


def _iou(a: Box, b: Box) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1, a[2] * a[3] + b[2] * b[3] - inter)


def _plausible_eyes(eyes: tuple[Point, Point], box: Box) -> bool:
    """Whether two eye centres sit where a face crop's eyes can: the geometry `_best_pair` asks of Haar eyes."""
    (lx, ly), (rx, ry) = eyes
    bx, by, bw, bh = box
    mid_u, mid_v = ((lx + rx) / 2 - bx) / bw, ((ly + ry) / 2 - by) / bh
    return (0.15 * bw <= rx - lx <= 0.75 * bw and abs(eye_tilt(*eyes)) <= _MAX_PAIR_TILT
            and abs(mid_u - 0.5) <= 0.2 and _EYE_BAND[0] <= mid_v <= _EYE_BAND[1])


def _best_pair(candidates: list[tuple[float, float, float]], box: Box) -> tuple[Point, Point] | None:
    """Pick the eye pair that looks most like two eyes of this face box, or None."""
    bx, by, bw, bh = box
    best, best_score = None, math.inf
    ordered = sorted(candidates)
    for i, (lx, ly, ls) in enumerate(ordered):
        for rx, ry, rs in ordered[i + 1 :]:
            dx = rx - lx
            tilt = abs(eye_tilt((lx, ly), (rx, ry)))
            ratio = max(ls, rs) / min(ls, rs)
            mid_u = ((lx + rx) / 2 - bx) / bw
            # Two boxes on one eye overlap; real eyes are apart by 15-75% of the face width,
            # of similar size, on either side of the face's vertical centre line.
            if not (0.15 * bw <= dx <= 0.75 * bw and dx >= 0.6 * (ls + rs) / 2):
                continue
            if tilt > _MAX_PAIR_TILT or ratio > 2.0 or abs(mid_u - 0.5) > 0.2:
                continue
            mid_v = ((ly + ry) / 2 - by) / bh
            score = tilt / _MAX_PAIR_TILT + math.log(ratio) + 2 * abs(mid_u - 0.5) + abs(mid_v - 0.4)
            if score < best_score:
                best, best_score = ((lx, ly), (rx, ry)), score
    return best


def _rotate_crop(gray: np.ndarray, crop_box: Box, *, angle: float, size: int) -> np.ndarray:
    """Rotate about the crop centre by `angle`, cut the crop box out, resize to size x size."""
    x, y, w, h = crop_box
    matrix = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), angle, 1.0)
    matrix[:, 2] -= (x, y)  # then shift the crop box to the origin: only w x h pixels are computed
    # Replicating the border keeps a rotated corner or a crop past the image edge from going black.
    patch = cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if w >= size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interp)


# --- batches in worker processes -------------------------------------------------------------

_worker_aligner: FaceAligner | None = None


def _init_worker(config: AlignConfig) -> None:
    """Runs once per worker process: one aligner (two cascades) serves every chunk it gets."""
    global _worker_aligner
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV's own threads would oversubscribe
    _worker_aligner = FaceAligner(config)


def _align_chunk(chunk: list[tuple[np.ndarray | bytes, bool]], max_pixels: int) -> list[AlignResult]:
    assert _worker_aligner is not None, "worker not initialised"
    return [_align_item(_worker_aligner, item, crop, max_pixels) for item, crop in chunk]


def _align_item(aligner: FaceAligner, item: np.ndarray | bytes, is_face_crop: bool, max_pixels: int) -> AlignResult:
    """One input to one result; a bad input becomes an error result, never an exception."""
    try:
        image = item if isinstance(item, np.ndarray) else decode_image(item, max_pixels=max_pixels)
        if is_face_crop:
            return aligner.align_crop(image)
        faces = aligner.detect_and_align(image, max_faces=1)
    except DataError as e:
        return AlignResult.failed(str(e))
    return faces[0] if faces else AlignResult.failed("no face detected")


class AlignJob:
    """One batch given to an `AlignPool`: in flight in its workers, or waiting to run in this process."""

    def __init__(self, *, futures: Sequence[Future[list[AlignResult]]] = (),
                 items: Sequence[tuple[np.ndarray | bytes, bool]] = (), aligner: FaceAligner | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self._futures = list(futures)
        self._items = list(items)
        self._aligner = aligner
        self._max_pixels = max_pixels

    def results(self, progress: Callable[[int], None] | None = None) -> list[AlignResult]:
        """The batch's results, in input order, once aligned; `progress` as in `align_batch`."""
        report = progress or (lambda n: None)
        results: list[AlignResult] = []
        for item, crop in self._items:
            results.append(_align_item(self._aligner, item, crop, self._max_pixels))  # type: ignore[arg-type]
            report(1)
        # Chunks are collected in order as they finish, so progress moves while the pool works.
        for future in self._futures:
            chunk_results = future.result()
            results.extend(chunk_results)
            report(len(chunk_results))
        return results


class AlignPool:
    """Aligns batches of images in `workers` processes that start once and serve every batch.

    Each worker builds one `FaceAligner` (cascades, and BlazeFace with its interpreter and a
    TensorFlow import, ~3 s CPU) and keeps it: `fer-mtl prepare` aligns a large source in many
    batches, and a pool per batch paid that start-up again for each. `align` waits for a batch;
    `submit` returns at once, so the caller can read the next batch meanwhile. With `workers=1`
    batches are aligned in this process. Use as a context manager, or call `close()`.

    Args:
        config: Alignment settings (default `AlignConfig()`).
        workers: Processes; 1 runs in this process (no start-up cost).
        max_pixels: Decoding limit per image (see `decode_image`).
    """

    def __init__(self, config: AlignConfig | None = None, *, workers: int = 1,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"`workers` must be >= 1, got {workers!r}")
        self.config = config or AlignConfig()
        self.workers = workers
        self.max_pixels = max_pixels
        self._aligner: FaceAligner | None = None
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> AlignPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (a later `align` starts new ones)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def align(
        self,
        images: Sequence[np.ndarray | bytes],
        *,
        is_face_crop: bool | Sequence[bool],
        chunk_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[AlignResult]:
        """Align one batch, in order; the arguments are `align_batch`'s."""
        return self.submit(images, is_face_crop=is_face_crop, chunk_size=chunk_size).results(progress)

    def submit(
        self,
        images: Sequence[np.ndarray | bytes],
        *,
        is_face_crop: bool | Sequence[bool],
        chunk_size: int | None = None,
    ) -> AlignJob:
        """Start aligning one batch and return at once; `AlignJob.results` waits for it.

        With workers, the batch is aligned while the caller goes on (reading the next batch, say);
        with `workers=1` it is aligned in this process when its results are asked for.
        """
        crops = [is_face_crop] * len(images) if isinstance(is_face_crop, bool) else list(is_face_crop)
        if len(crops) != len(images):
            raise ConfigError(f"`is_face_crop` has {len(crops)} values for {len(images)} images")
        items = list(zip(images, crops, strict=True))
        if self.workers == 1 or len(items) <= 1:
            if self._aligner is None:
                self._aligner = FaceAligner(self.config)
            return AlignJob(items=items, aligner=self._aligner, max_pixels=self.max_pixels)
        size = chunk_size or max(1, min(512, math.ceil(len(items) / (self.workers * 4))))
        pool = self._pool()
        futures = [pool.submit(_align_chunk, items[i : i + size], self.max_pixels) for i in range(0, len(items), size)]
        return AlignJob(futures=futures)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the parent may hold TensorFlow or OpenCV threads, which fork can deadlock.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_init_worker,
                                                 initargs=(self.config,))
        return self._executor


def align_batch(
    images: Sequence[np.ndarray | bytes],
    *,
    is_face_crop: bool | Sequence[bool],
    config: AlignConfig | None = None,
    workers: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[AlignResult]:
    """Align many images, in order, decoding bytes and aligning in `workers` processes.

    One batch in a pool of its own; `AlignPool` keeps the workers for many batches.

    Args:
        images: Decoded uint8 arrays or encoded image bytes (decoded in the workers).
        is_face_crop: For all images or per image: True aligns the image as a face crop,
            False detects faces and keeps the largest.
        config: Alignment settings (default `AlignConfig()`).
        workers: Processes; 1 runs in this process (no start-up cost).
        max_pixels: Decoding limit per image (see `decode_image`).
        chunk_size: Images sent to a worker at a time (default: about 4 chunks per worker).
        progress: Called with the number of images just aligned, as they finish (each image in
            this process, each chunk with workers), e.g. `fer_model.progress.Progress.advance`.

    Returns:
        One `AlignResult` per input, in input order. Undecodable inputs and full images without a
        face give `face=None` and `error` set; they never raise.
    """
    with AlignPool(config, workers=workers, max_pixels=max_pixels) as pool:
        return pool.align(images, is_face_crop=is_face_crop, chunk_size=chunk_size, progress=progress)


def alignment_stats(
    results: Sequence[AlignResult], *, max_angle: float = 10.0, bin_width: float = 2.0
) -> dict[str, Any]:
    """Counts for the dataset manifest: faces and eyes found, applied rotations, errors by reason.

    The rotation histogram covers results whose eyes were found, in `bin_width` bins over
    [-max_angle, max_angle] (the last bin includes its upper edge, where capped rotations land).
    """
    if max_angle <= 0 or bin_width <= 0:
        raise ConfigError(f"`max_angle` and `bin_width` must be > 0, got {max_angle} and {bin_width}")
    n_bins = max(1, math.ceil(2 * max_angle / bin_width - 1e-9))
    edges = np.linspace(-max_angle, max_angle, n_bins + 1)
    angles = np.array([r.angle for r in results if r.eyes_found], dtype=np.float64)
    counts, _ = np.histogram(np.clip(angles, -max_angle, max_angle), bins=edges)
    errors: dict[str, int] = {}
    for r in results:
        if r.error is not None:
            errors[r.error] = errors.get(r.error, 0) + 1
    return {
        "total": len(results),
        "aligned": sum(r.face is not None for r in results),
        "faces_found": sum(r.face_found for r in results),
        "eyes_found": sum(r.eyes_found for r in results),
        "capped": int(np.sum(np.isclose(np.abs(angles), max_angle))),
        "mean_abs_angle": float(np.mean(np.abs(angles))) if angles.size else 0.0,
        "rotation_histogram": {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]},
        "errors": sum(errors.values()),
        "error_reasons": dict(sorted(errors.items(), key=lambda kv: -kv[1])),
    }
