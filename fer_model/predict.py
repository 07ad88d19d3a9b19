"""Full images -> faces -> per-task predictions, with the model artifact loaded once.

`Predictor.predict` decodes, detects and aligns every face of every image the same way the training
data was aligned (the model's config.json `alignment`), then sends all faces through the model in
one batch: one forward pass per call, however many images and faces it carries.

Importing this module is light (no TensorFlow/Keras/OpenCV); they load when a Predictor is built.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from fer_model.artifact_files import CONFIG_FILE
from fer_model.errors import ArtifactError, ConfigError, DataError, InvalidInput

logger = logging.getLogger(__name__)

#: The model shipped with the package, used when no model folder is given.
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


@dataclass(frozen=True)
class FacePrediction:
    """One face: where it is, how it was aligned, and class probabilities per task.

    Attributes:
        box: (x, y, w, h) of the face in its image; None for pre-aligned input (no detection ran).
        eyes_found: Both eyes were found and levelled (False for pre-aligned input).
        angle: Rotation applied to level the eyes, degrees, counter-clockwise positive.
        probabilities: task -> class name -> probability (Python floats, in class order).
    """

    box: tuple[int, int, int, int] | None
    eyes_found: bool
    angle: float
    probabilities: Mapping[str, Mapping[str, float]]

    def __post_init__(self) -> None:
        if self.box is not None and (len(self.box) != 4 or any(not isinstance(v, int) for v in self.box)):
            raise DataError(f"`box` must be four ints (x, y, w, h) or None, got {self.box!r}")
        if not self.probabilities or any(not p for p in self.probabilities.values()):
            raise DataError("`probabilities` must hold at least one task, each with at least one class")
        # Read-only views: a frozen dataclass should not hand out mutable inner dicts.
        frozen = {t: MappingProxyType(dict(p)) for t, p in self.probabilities.items()}
        object.__setattr__(self, "probabilities", MappingProxyType(frozen))

    def label(self, task: str) -> str:
        """The most probable class of `task` (first in class order on a tie, like argmax)."""
        probs = self.probabilities[task]
        return max(probs, key=probs.__getitem__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as docs/ARCHITECTURE.md specifies."""
        return {
            "box": list(self.box) if self.box is not None else None,
            "eyes_found": self.eyes_found,
            "angle": self.angle,
            "predictions": {
                task: {"label": self.label(task), "probabilities": dict(probs)}
                for task, probs in self.probabilities.items()
            },
        }


def resolve_model_dir(model_dir: str | os.PathLike[str] | None) -> Path:
    """`model_dir` as a Path, or the pretrained model shipped in `fer_model/pretrained/` for None."""
    if model_dir is not None:
        return Path(model_dir)
    if not (PRETRAINED_DIR / CONFIG_FILE).is_file():
        raise ArtifactError(
            f"no pretrained model is shipped with this fer-mtl ({PRETRAINED_DIR} is missing or empty); "
            "pass a model artifact folder (`--model DIR`, or `Predictor(model_dir=...)`)"
        )
    return PRETRAINED_DIR


def predict_probabilities(model: Any, faces: np.ndarray, *, tasks: Sequence[str], flip_average: bool = False
                          ) -> dict[str, np.ndarray]:
    """task -> float64 [N, C] probabilities of `model` on faces [N, S, S, 1] (0..255 pixels).

    With `flip_average`, each face and its horizontal mirror go through the model in one batch and
    their probabilities are averaged: faces are left-right symmetric, so the mirror is a second view.
    """
    batch = np.asarray(faces, dtype=np.float32)
    if flip_average:
        batch = np.concatenate([batch, batch[:, :, ::-1, :]])
    outputs = model.predict_on_batch(batch)
    probs = {t: np.asarray(outputs[t], dtype=np.float64) for t in tasks}
    if flip_average:
        n = len(faces)
        probs = {t: (p[:n] + p[n:]) / 2.0 for t, p in probs.items()}
    return probs


class Predictor:
    """Loads a model artifact once and predicts emotion (and the other heads) for faces in images.

    Args:
        model_dir: A model artifact folder; None uses the pretrained model in `fer_model/pretrained/`.
        max_pixels: Largest encoded image (width x height) `predict` decodes.
        flip_average: Average each face's probabilities with its mirror image's (test-time
            augmentation; twice the model work per face).
        detector: Face detector, "blazeface" or "haar"; None uses the model's config.json
            `alignment.detector` (BlazeFace when it names none). Either crops faces the same way.
    """

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, *, max_pixels: int | None = None,
                 flip_average: bool = False, detector: str | None = None) -> None:
        import dataclasses

        from fer_model.alignment import AlignConfig, FaceAligner
        from fer_model.images import DEFAULT_MAX_PIXELS
        from fer_model.model_artifact import load_model_artifact

        path = resolve_model_dir(model_dir)
        self._artifact = load_model_artifact(path)
        config = self._artifact.config
        self.tasks: dict[str, tuple[str, ...]] = dict(config.tasks)
        self.input_size = config.input_size
        try:
            align_config = AlignConfig.from_dict(dict(config.alignment))
        except (ConfigError, TypeError) as e:
            raise ArtifactError(f"{path}/{CONFIG_FILE} has unusable `alignment` settings: {e}") from e
        if detector is not None:
            align_config = dataclasses.replace(align_config, detector=detector)  # validated: ConfigError
        if align_config.size != self.input_size:
            raise ArtifactError(f"{path}/{CONFIG_FILE} aligns to {align_config.size}px but the model takes "
                                f"{self.input_size}px faces")
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.flip_average = bool(flip_average)
        self.align_config = align_config
        self._aligner = FaceAligner(align_config)
        logger.info("loaded model %s (tasks %s, %s detector)", path, ", ".join(self.tasks), align_config.detector)

    @property
    def model_dir(self) -> Path:
        return self._artifact.path

    def _forward(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """One model call on uint8 [N, S, S, 1]; returns task -> float [N, C] probabilities."""
        return predict_probabilities(self._artifact.model, faces, tasks=tuple(self.tasks),
                                     flip_average=self.flip_average)

    def _to_predictions(self, probs: Mapping[str, np.ndarray], meta: Sequence[tuple[Any, bool, float]]
                        ) -> list[FacePrediction]:
        out = []
        for i, (box, eyes_found, angle) in enumerate(meta):
            per_task = {t: {c: float(p) for c, p in zip(classes, probs[t][i], strict=True)}
                        for t, classes in self.tasks.items()}
            out.append(FacePrediction(box=box, eyes_found=eyes_found, angle=angle, probabilities=per_task))
        return out

    def predict_aligned(self, faces: np.ndarray) -> list[FacePrediction]:
        """Predict pre-aligned faces: uint8 [N, S, S] or [N, S, S, 1] with S the model's input size.

        Raises:
            InvalidInput: wrong type, dtype or shape (the message says which and what is expected).
        """
        s = self.input_size
        if not isinstance(faces, np.ndarray):
            raise InvalidInput(f"aligned faces must be a numpy array, got {type(faces).__name__}")
        if faces.dtype != np.uint8:
            raise InvalidInput(f"aligned faces must be uint8 pixels 0..255, got dtype {faces.dtype}")
        if faces.ndim == 4 and faces.shape[3] == 1:
            faces = faces[..., 0]
        if faces.ndim != 3 or faces.shape[1:] != (s, s):
            raise InvalidInput(f"aligned faces must have shape [N, {s}, {s}] or [N, {s}, {s}, 1], got {faces.shape}")
        if faces.shape[0] == 0:
            return []
        probs = self._forward(faces[..., np.newaxis])
        return self._to_predictions(probs, [(None, False, 0.0)] * faces.shape[0])

    def _as_array(self, index: int, image: np.ndarray | bytes) -> np.ndarray:
        from fer_model.images import decode_image

        if isinstance(image, bytes | bytearray | memoryview):
            try:
                return decode_image(bytes(image), max_pixels=self.max_pixels)
            except DataError as e:
                raise InvalidInput(f"image {index}: {e}") from e
        if not isinstance(image, np.ndarray):
            raise InvalidInput(f"image {index} must be encoded bytes or a uint8 array, got {type(image).__name__}")
        return image

    def predict(self, images: Sequence[np.ndarray | bytes], *, max_faces_per_image: int | None = None
                ) -> list[list[FacePrediction]]:
        """Detect, align and classify every face in each image; all faces share one model call.

        Args:
            images: Encoded files (JPEG, PNG, ...) or decoded uint8 arrays (HxW gray or HxWx3 BGR).
            max_faces_per_image: Keep at most this many faces per image, largest first.

        Returns:
            One list per input image, in order, of its faces largest first; [] for an image without a face.

        Raises:
            InvalidInput: an image cannot be decoded or is not a uint8 image array.
        """
        if isinstance(images, bytes | np.ndarray):
            raise InvalidInput("`images` must be a sequence of images; wrap a single image in a list")
        faces: list[np.ndarray] = []
        meta: list[tuple[Any, bool, float]] = []
        owners: list[int] = []
        for i, image in enumerate(images):
            array = self._as_array(i, image)
            try:
                results = self._aligner.detect_and_align(array, max_faces=max_faces_per_image)
            except DataError as e:
                raise InvalidInput(f"image {i}: {e}") from e
            for r in results:
                if r.face is None:  # alignment failed for this face; the error is logged, the face skipped
                    logger.warning("image %d: face at %s not aligned: %s", i, r.box, r.error)
                    continue
                faces.append(r.face)
                meta.append((tuple(int(v) for v in r.box) if r.box else None, bool(r.eyes_found), float(r.angle)))
                owners.append(i)
        per_image: list[list[FacePrediction]] = [[] for _ in images]
        if not faces:
            return per_image
        probs = self._forward(np.stack(faces)[..., np.newaxis])
        for owner, prediction in zip(owners, self._to_predictions(probs, meta), strict=True):
            per_image[owner].append(prediction)
        return per_image
