"""Draw every face's box and its answers on the photo (OpenCV), for people who prefer a file to JSON.

`annotate` returns a new BGR image: each face gets a rectangle and, just below it (above when there is
no room below), a dark panel with one line per task: "emotion: happy 93%". Text size follows the
box width, so a small face gets small text and its panel stays near the face. `write_annotated`
encodes the result by the output file's extension and writes it under a temporary name first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fer_model.errors import ConfigError, DataError

if TYPE_CHECKING:
    from fer_model.predict import FacePrediction

#: Extensions OpenCV can encode here, lower case.
WRITABLE = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

_BOX = (0, 212, 255)  # BGR: the page's yellow
_PANEL = (24, 24, 24)
_TEXT = (255, 255, 255)
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX, without importing cv2 at module import


def label_lines(face: FacePrediction) -> list[str]:
    """One line per task: "<task>: <label> <probability>%"."""
    lines = []
    for task, probs in face.probabilities.items():
        label = face.label(task)
        lines.append(f"{task}: {label} {100 * probs[label]:.0f}%")
    return lines


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        got = getattr(image, "dtype", type(image).__name__)
        raise DataError(f"the image to annotate must be a uint8 numpy array, got {got}")
    if image.ndim == 2:
        return np.repeat(image[:, :, np.newaxis], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image.copy()
    raise DataError(f"the image to annotate must be HxW gray or HxWx3 BGR, got shape {image.shape}")


def _draw_face(canvas: np.ndarray, face: FacePrediction) -> None:
    import cv2

    x, y, w, h = face.box
    height, width = canvas.shape[:2]
    thickness = max(1, round(w / 60))
    cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), _BOX, thickness)
    scale = float(np.clip(w / 220, 0.3, 1.5))
    lines = label_lines(face)
    sizes = [cv2.getTextSize(line, _FONT, scale, 1) for line in lines]
    line_height = max(s[0][1] + s[1] for s in sizes) + 4
    panel_w = max(s[0][0] for s in sizes) + 6
    panel_h = line_height * len(lines) + 2
    top = y + h if y + h + panel_h <= height else max(0, y - panel_h)
    left = min(x, max(0, width - panel_w))
    cv2.rectangle(canvas, (left, top), (left + panel_w - 1, top + panel_h - 1), _PANEL, cv2.FILLED)
    for n, (line, ((_, text_h), _)) in enumerate(zip(lines, sizes, strict=True)):
        baseline = top + n * line_height + text_h + 3
        cv2.putText(canvas, line, (left + 3, baseline), _FONT, scale, _TEXT, 1, cv2.LINE_AA)


def annotate(image: np.ndarray, faces: Sequence[FacePrediction]) -> np.ndarray:
    """The image (HxW gray or HxWx3 BGR uint8) as a new BGR copy with each face's box and answers drawn.

    Faces without a box (pre-aligned input) have nowhere to be drawn and are skipped.
    """
    canvas = _as_bgr(image)
    for face in faces:
        if face.box is not None:
            _draw_face(canvas, face)
    return canvas


def check_output(out: str | os.PathLike[str]) -> Path:
    """`out` as a Path if OpenCV can write its extension (call before the work, so a typo fails early).

    Raises:
        ConfigError: the extension is not one of WRITABLE.
    """
    path = Path(out)
    if path.suffix.lower() not in WRITABLE:
        raise ConfigError(f"cannot write an annotated image to {path}: use one of {', '.join(WRITABLE)}")
    return path


def write_annotated(out: str | os.PathLike[str], image: np.ndarray, faces: Sequence[FacePrediction]) -> Path:
    """Annotate `image` and write it to `out`, encoded by its extension (.jpg, .png, ...).

    Raises:
        ConfigError: `out` has an extension OpenCV cannot write.
        DataError: the image is not a uint8 gray/BGR array, or the file cannot be written.
    """
    import cv2

    path = check_output(out)
    suffix = path.suffix.lower()
    ok, encoded = cv2.imencode(suffix, annotate(image, faces))
    if not ok:
        raise DataError(f"OpenCV could not encode the annotated image as {suffix}")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write the annotated image {path}: {e.strerror or e}") from e
    return path
