"""Hostile inputs for the fuzz tests: real encoded images and their mutations, header-only bombs,
arbitrary JSON, and a time bound per example.

Strategies are hypothesis strategies; the fuzz tests run them under `FUZZ` (derandomized, no
example database), so CI sees the same examples on every run.
"""

from __future__ import annotations

import functools
import io
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")

#: One failing example must never hang a test run: each example runs in a thread joined with this
#: bound. Generous, because a busy 2-core machine is slow; a hang is minutes, a slow example seconds.
EXAMPLE_TIMEOUT_S = 60.0

#: Encodings of the same small picture, the seeds that mutations start from.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def fuzz_settings(max_examples: int) -> settings:
    """Deterministic (derandomized, no database) and deadline-free: the time bound is `bounded`."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def bounded(fn: Callable[[], T], *, timeout_s: float = EXAMPLE_TIMEOUT_S, what: str = "example") -> T:
    """`fn()` in a daemon thread; fails the test when it runs past `timeout_s` (a hang), and
    re-raises whatever it raised."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller as is
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True, name="fuzz-example")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise AssertionError(f"{what} still running after {timeout_s:.0f} s: a hang")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@functools.cache
def picture(size: int = 96) -> np.ndarray:
    """A real photo with one face (scikit-image's astronaut), size x size, RGB uint8."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size)))


@functools.cache
def encoded(fmt: str, size: int = 96) -> bytes:
    """`picture(size)` encoded as `fmt` (a Pillow format name)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(picture(size)).save(buf, format=fmt)
    return buf.getvalue()


def png_with_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb when both are large)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@functools.cache
def image_of_size(fmt: str, width: int, height: int, value: int = 128) -> bytes:
    """A valid `fmt` image of width x height (thin strips, single pixels), one grey level."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((height, width), value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def bmp_with_size(width: int, height: int) -> bytes:
    """A BMP header declaring width x height (signed: a negative height means top-down) and 16 bytes of pixels."""
    pixels = b"\0" * 16
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(dib) + len(pixels), 0, 0, 14 + len(dib)) + dib + pixels


def jpeg_with_size(width: int, height: int) -> bytes:
    """The real JPEG seed with its frame header (SOF0) patched to declare width x height."""
    data = bytearray(encoded("JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` truncated, bit-flipped, overwritten or with bytes inserted, one to eight times."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos : pos + len(chunk)] = chunk
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


#: Declared dimensions: zero, one, ordinary, just past a limit, and absurd.
DIMENSIONS = st.one_of(st.sampled_from([0, 1, 2, 65535, 100_000]), st.integers(0, 70_000))


def hostile_images() -> st.SearchStrategy[bytes]:
    """Random bytes, mutated real images of every format, intact ones, and header-only bombs."""
    seeds = st.sampled_from(FORMATS).map(encoded)
    return st.one_of(
        st.binary(max_size=512),
        seeds,
        seeds.flatmap(mutated),
        st.builds(png_with_size, DIMENSIONS, DIMENSIONS),
        st.builds(bmp_with_size, DIMENSIONS, st.one_of(DIMENSIONS, DIMENSIONS.map(lambda h: -h))),
        st.builds(jpeg_with_size, st.integers(0, 65535), st.integers(0, 65535)),
        st.builds(image_of_size, st.sampled_from(["PNG", "JPEG", "GIF"]), *_THIN_OR_SMALL),
    )


#: (width, height) of valid images: a strip one pixel thin, or small.
_THIN_OR_SMALL = (st.sampled_from([1, 2, 7, 3000]), st.sampled_from([1, 3, 50, 2500]))


#: Any JSON value: scalars (NaN and infinities included, as Python's json writes them), and
#: nested lists and objects.
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def deeply_nested(depth: int, *, inner: str = "1") -> bytes:
    """`[[[...1...]]]` nested `depth` deep, as JSON text."""
    return ("[" * depth + inner + "]" * depth).encode()
