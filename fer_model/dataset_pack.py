"""Pack a dataset artifact into one compact file for moving it to a training machine, and back.

Aligned 50x50 faces barely compress losslessly (about 2.5 KB each as PNG), so 40k faces are
~100 MB. Packing re-encodes each face (WebP, lossy by default) into one .npz of a few tens of MB,
which is what a size-capped transfer to a GPU box can carry. Unpacking writes an ordinary dataset
artifact; its manifest records the codec and the measured PSNR so nobody mistakes it for the
original pixels. Soft labels (dataset format 2) travel as they are, with their provenance.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

from fer_model.dataset import WRITER_FIELDS, load_dataset, write_dataset
from fer_model.errors import ArtifactError, ConfigError
from fer_model.tasks import TASK_NAMES

logger = logging.getLogger(__name__)

PACK_FORMAT = "fer-mtl-dataset-pack"
PACK_VERSION = 2
#: Pack versions `unpack_dataset` reads: version 1 packs carry no soft labels.
READABLE_PACK_VERSIONS = (1, 2)
Codec = Literal["webp", "png"]


def _encode(face: np.ndarray, codec: Codec, quality: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_WEBP_QUALITY, quality] if codec == "webp" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    ok, buf = cv2.imencode(f".{codec}", face, params)
    if not ok:
        raise ArtifactError(f"OpenCV could not encode a face as {codec}")
    return buf.tobytes()


def pack_dataset(
    dataset_dir: str | os.PathLike[str], out_file: str | os.PathLike[str], *, codec: Codec = "webp", quality: int = 90
) -> dict[str, float]:
    """Write `out_file` (.npz) holding every face re-encoded with `codec`, labels, splits and manifest.

    Returns:
        Size and fidelity figures: bytes written, mean bytes per face, PSNR (dB) over all faces.
    """
    import cv2

    if codec not in ("webp", "png"):
        raise ConfigError(f"`codec` must be 'webp' or 'png', got {codec!r}")
    if not 1 <= quality <= 100:
        raise ConfigError(f"`quality` must be in [1, 100], got {quality}")
    dataset = load_dataset(dataset_dir)
    chunks: list[bytes] = []
    squared_error = 0.0
    for face in dataset.images:
        data = _encode(np.asarray(face), codec, quality)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        squared_error += float(np.sum((decoded.astype(np.float64) - face.astype(np.float64)) ** 2))
        chunks.append(data)
    offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    mse = squared_error / max(1, dataset.images.size)
    psnr = float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))
    manifest = {k: v for k, v in dataset.manifest.items() if not k.startswith("_")}
    header = {"format": PACK_FORMAT, "format_version": PACK_VERSION, "codec": codec, "quality": quality,
              "psnr_db": psnr, "manifest": manifest}
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(
        tmp,
        header=np.frombuffer(json.dumps(header).encode(), np.uint8),
        blob=np.frombuffer(b"".join(chunks), np.uint8),
        offsets=offsets,
        split=np.asarray(dataset.split),
        **{f"label_{t}": np.asarray(dataset.labels[t]) for t in TASK_NAMES},
        **{f"soft_{t}": np.asarray(a) for t, a in dataset.soft_labels.items()},
    )
    os.replace(tmp, out)
    size = out.stat().st_size
    logger.info("packed %d faces into %s: %.1f MB, PSNR %.1f dB", len(chunks), out, size / 1e6, psnr)
    return {"bytes": float(size), "bytes_per_face": size / max(1, len(chunks)), "psnr_db": psnr}


def unpack_dataset(pack_file: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Decode a pack written by `pack_dataset` into a dataset artifact folder."""
    import cv2

    try:
        with np.load(pack_file, allow_pickle=False) as npz:
            header = json.loads(npz["header"].tobytes())
            blob, offsets, split = npz["blob"], npz["offsets"], npz["split"]
            labels = {t: npz[f"label_{t}"] for t in TASK_NAMES}
            soft_tasks = sorted(header.get("manifest", {}).get("soft_labels") or {})
            soft = {t: npz[f"soft_{t}"] for t in soft_tasks}
    except (OSError, KeyError, ValueError) as e:
        raise ArtifactError(f"{pack_file} is not a readable dataset pack: {e}") from e
    if header.get("format") != PACK_FORMAT or header.get("format_version") not in READABLE_PACK_VERSIONS:
        raise ArtifactError(f"{pack_file} is not a {PACK_FORMAT} file of version "
                            f"{', '.join(map(str, READABLE_PACK_VERSIONS))}; re-pack it with `pack_dataset`")
    manifest = header["manifest"]
    size = int(manifest["image_size"])
    images = np.empty((len(offsets) - 1, size, size), dtype=np.uint8)
    for i in range(len(images)):
        face = cv2.imdecode(blob[offsets[i] : offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
        if face is None or face.shape != (size, size):
            raise ArtifactError(f"{pack_file}: face {i} does not decode to {size}x{size}")
        images[i] = face
    extra = {k: v for k, v in manifest.items() if k not in WRITER_FIELDS}
    extra["transport"] = {"codec": header["codec"], "quality": header["quality"], "psnr_db": header["psnr_db"]}
    return write_dataset(
        out_dir, images=images, labels=labels, split=split, sources=manifest.get("sources"),
        alignment=manifest.get("alignment"), rejects=manifest.get("rejects"), extra=extra,
        soft_labels=soft, soft_label_provenance=manifest.get("soft_labels"),
    )
