"""Decoding encoded image bytes to uint8 arrays, with limits, and conversion to grayscale.

Pillow decodes: it reads the header (format and size) without decoding pixels, so decompression
bombs are refused before any large allocation, and unlike `cv2.imdecode` it raises on truncated
files instead of filling the missing part with grey. Arrays follow OpenCV's layout: HxW gray or
HxWx3 BGR, uint8.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_model.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000

# The formats decoded; anything else is refused before a parser for it runs. Pillow would otherwise
# try every plugin it has on untrusted bytes (EPS even hands the file to Ghostscript). JPEG's opener
# also opens the phone JPEGs Pillow calls MPO.
FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

# Modes that carry one gray channel (alpha, where present, is dropped).
_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# High bit depth single-channel modes, scaled down to 8 bits.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an encoded image (one of `FORMATS`: JPEG, PNG, WebP, BMP, GIF, TIFF) to a uint8 array.

    Args:
        data: The encoded file content.
        max_pixels: Largest accepted width x height, checked from the header before decoding.

    Returns:
        uint8 HxW (gray sources) or HxWx3 BGR (colour sources); alpha is dropped and EXIF
        orientation applied, as `cv2.imread` does.

    Raises:
        DataError: empty input, not an image, too many pixels, or truncated/corrupt data.
        ConfigError: `max_pixels` is not positive.
    """
    if max_pixels <= 0:
        raise ConfigError(f"`max_pixels` must be > 0, got {max_pixels}")
    if isinstance(data, memoryview | bytearray):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise DataError(f"image data must be bytes, got {type(data).__name__}")
    if not data:
        raise DataError("image data is empty (0 bytes)")
    try:
        # PIL warns above its own bomb limit; our max_pixels check below is the one that counts.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError as e:
        raise DataError(
            f"not a recognised image format ({len(data)} bytes starting {data[:8]!r}); "
            f"send one of {', '.join(FORMATS)}"
        ) from e
    except Image.DecompressionBombError as e:
        raise DataError(f"image has too many pixels (more than max_pixels={max_pixels:,}): {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"image header is corrupt: {e}") from e
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise DataError(
                f"image is {width}x{height} = {width * height:,} pixels, more than "
                f"max_pixels={max_pixels:,}; pass a larger `max_pixels` if this is intended"
            )
        if width == 0 or height == 0:
            raise DataError(f"image has no pixels ({width}x{height})")
        fmt = image.format
        try:
            # load() raises on truncated data (Pillow's LOAD_TRUNCATED_IMAGES is False by default).
            image.load()
            image = ImageOps.exif_transpose(image) or image
            return _to_array(image)
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise DataError(f"image data is truncated or corrupt ({fmt}, {width}x{height}): {e}") from e


def _to_array(image: Image.Image) -> np.ndarray:
    """A loaded PIL image as uint8 HxW gray or HxWx3 BGR."""
    mode = image.mode
    if mode in _GRAY_MODES:
        return np.array(image.convert("L"), dtype=np.uint8)
    if mode in _WIDE_GRAY_MODES or mode == "F":
        wide = np.asarray(image, dtype=np.float64)
        # 16-bit sources span 0..65535; float ("F") images are taken as 0..255 already.
        scale = 1.0 if mode == "F" else 257.0
        return np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8)
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def to_gray(image: np.ndarray) -> np.ndarray:
    """A uint8 image (HxW, HxWx1, HxWx3 BGR or HxWx4 BGRA) as uint8 HxW gray.

    Raises:
        DataError: not a uint8 array of one of those shapes.
    """
    import cv2  # local: keeps `import fer_model.images` light for decode-only callers

    if not isinstance(image, np.ndarray):
        raise DataError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DataError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 3 and image.shape[2] == 4:
        gray = cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    else:
        raise DataError(f"image must be HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), got shape {image.shape}")
    if gray.shape[0] == 0 or gray.shape[1] == 0:
        raise DataError(f"image has no pixels (shape {image.shape})")
    return np.ascontiguousarray(gray)
