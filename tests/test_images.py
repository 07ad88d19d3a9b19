"""decode_image limits and error paths, and to_gray, on skimage's astronaut photo."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from skimage import data

from fer_model.errors import ConfigError, DataError
from fer_model.images import decode_image, to_gray


@pytest.fixture(scope="module")
def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose valid IHDR claims width x height, followed by one tiny IDAT: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_jpeg_decodes_to_bgr_close_to_source(astronaut_bgr: np.ndarray) -> None:
    decoded = decode_image(_encode(astronaut_bgr, ".jpg"))
    assert decoded.dtype == np.uint8 and decoded.shape == astronaut_bgr.shape
    assert np.abs(decoded.astype(int) - astronaut_bgr).mean() < 4
    # Channel order is BGR: swapping to RGB would move the means far apart on this photo.
    assert np.abs(decoded.mean(axis=(0, 1)) - astronaut_bgr.mean(axis=(0, 1))).max() < 2


def test_png_gray_stays_two_dimensional(astronaut_bgr: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    np.testing.assert_array_equal(decode_image(_encode(gray, ".png")), gray)


def test_png_alpha_is_dropped(astronaut_bgr: np.ndarray) -> None:
    bgra = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 7
    np.testing.assert_array_equal(decode_image(_encode(bgra, ".png")), astronaut_bgr)


def test_16_bit_png_is_scaled_to_8_bits() -> None:
    wide = np.array([[0, 257 * 100], [257 * 200, 65535]], dtype=np.uint16)
    np.testing.assert_array_equal(decode_image(_encode(wide, ".png")), [[0, 100], [200, 255]])


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "empty"),
        (np.random.default_rng(0).bytes(2000), "not a recognised image"),
        (_png_header_only(100_000, 100_000), "too many pixels"),
        (_png_header_only(10_000, 5_000), r"10000x5000 = 50,000,000 pixels, more than max_pixels=40,000,000"),
    ],
    ids=["empty", "random-bytes", "png-bomb-header", "png-over-limit"],
)
def test_bad_bytes_raise_data_error(payload: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        decode_image(payload)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_is_detected(astronaut_bgr: np.ndarray, ext: str) -> None:
    encoded = _encode(astronaut_bgr, ext)
    with pytest.raises(DataError, match="truncated or corrupt"):
        decode_image(encoded[: len(encoded) // 2])


def test_max_pixels_applies_to_real_images(astronaut_bgr: np.ndarray) -> None:
    encoded = _encode(astronaut_bgr, ".jpg")
    with pytest.raises(DataError, match="512x512"):
        decode_image(encoded, max_pixels=512 * 511)
    assert decode_image(encoded, max_pixels=512 * 512).shape == (512, 512, 3)


def test_non_bytes_and_bad_limit_are_refused() -> None:
    with pytest.raises(DataError, match="must be bytes, got str"):
        decode_image("image.jpg")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="`max_pixels` must be > 0, got 0"):
        decode_image(b"x", max_pixels=0)


def test_to_gray_accepts_gray_bgr_bgra_and_single_channel(astronaut_bgr: np.ndarray) -> None:
    expected = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2BGRA)
    for image in (astronaut_bgr, bgra, expected, expected[:, :, None]):
        np.testing.assert_array_equal(to_gray(image), expected)


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((4, 4), np.float32), "must be uint8, got float32"),
        (np.zeros((4, 4, 2), np.uint8), r"got shape \(4, 4, 2\)"),
        (np.zeros((0, 4), np.uint8), "no pixels"),
        ([[1, 2]], "must be a numpy array, got list"),
    ],
)
def test_to_gray_rejects_bad_arrays(image: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        to_gray(image)  # type: ignore[arg-type]
