"""Store a `.keras` file's large weight arrays as float16: half the bytes, loaded back as float32.

A shipped model travels in git, in the package and in every image. Float32 weights barely compress,
so the paper-width model is 9.7 MB; stored as float16 it is under 5 MB. Keras assigns a stored
array to its float32 variable with a cast, so the loader needs no change, and the model computes in
float32 as before. Rounding to float16 moved the shipped model's probabilities by at most 1.4e-3 and
changed 2 of its 3,589 emotion answers on PublicTest (accuracy unchanged) and none of the others;
but it changes them, so whatever records the model's answers (metrics, probe, card, file hashes)
must be regenerated after this step.

Small arrays (biases, batch-norm statistics, whose variances can sit below float16's normal range)
and any array with a value float16 cannot hold stay float32: they are a fraction of the bytes.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fer_model._keras_file import check_keras_file
from fer_model.errors import ArtifactError

WEIGHTS_MEMBER = "model.weights.h5"
#: Arrays with fewer elements stay float32 (biases, batch-norm vectors): halving them saves little.
MIN_ELEMENTS = 1024
#: The largest finite float16.
_FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Float16Report:
    """What `store_float16_weights` did to one file.

    Attributes:
        converted: arrays now stored as float16.
        kept: float32 arrays left as they were (small, or holding values float16 cannot).
        bytes_before: file size before.
        bytes_after: file size after.
    """

    converted: int
    kept: int
    bytes_before: int
    bytes_after: int


def store_float16_weights(path: str | os.PathLike[str], *, min_elements: int = MIN_ELEMENTS) -> Float16Report:
    """Rewrite the `.keras` file at `path` in place with its float32 arrays of `min_elements` or more as float16.

    The file is replaced in one rename, so a failure leaves the original. Running it again converts
    nothing more.

    Raises:
        ArtifactError: `path` is not a plain Keras 3 archive, or has no weights file.
    """
    import h5py
    import numpy as np

    path = Path(path)
    check_keras_file(path)
    before = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        members = [(info, archive.read(info.filename)) for info in archive.infolist()]
    weights = next((data for info, data in members if info.filename == WEIGHTS_MEMBER), None)
    if weights is None:
        raise ArtifactError(f"{path} holds no {WEIGHTS_MEMBER}: re-save the model with `model.save('model.keras')`")

    converted = kept = 0
    rewritten = io.BytesIO()
    with h5py.File(io.BytesIO(weights), "r") as src, h5py.File(rewritten, "w") as dst:
        dst.attrs.update(src.attrs)

        def copy(name: str, obj: h5py.Group | h5py.Dataset) -> None:
            nonlocal converted, kept
            if isinstance(obj, h5py.Group):
                dst.require_group(name).attrs.update(obj.attrs)
                return
            if obj.dtype == np.float32 and obj.size >= min_elements:
                data = obj[()]
                if np.all(np.abs(data) <= _FLOAT16_MAX):
                    converted += 1
                    dst.create_dataset(name, data=data.astype(np.float16)).attrs.update(obj.attrs)
                    return
            kept += int(obj.dtype == np.float32)
            src.copy(obj, dst, name=name)

        # visititems walks parents before children, so each dataset's group exists when it is copied.
        src.visititems(copy)

    tmp = path.with_name(f".{path.name}.float16")
    try:
        # Stored, not deflated, as Keras writes it: h5py seeks inside the member when loading.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as out:
            for info, data in members:
                out.writestr(info, rewritten.getvalue() if info.filename == WEIGHTS_MEMBER else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return Float16Report(converted=converted, kept=kept, bytes_before=before, bytes_after=path.stat().st_size)
