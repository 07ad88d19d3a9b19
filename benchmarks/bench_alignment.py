"""Alignment speed: downscaled detection vs the `fer` package's full-resolution Haar recipe.

Times, in one process on the same 640x480 JPEG of skimage's astronaut:
All rows include JPEG decoding. The speed-up is against the baseline in the same run.
- baseline: decode + Haar frontal-face detection at full resolution, scaleFactor 1.1,
  minNeighbors 5, minSize 50 (what `fer.FER` does before its CNN; ~all of its time),
- ours: decode + `FaceAligner.detect_and_align` (downscaled detection, eyes, levelling, crop),
and `align_batch` throughput on 48x48 face-crop JPEGs with workers=1 vs workers=2.

Run: .venv/bin/python benchmarks/bench_alignment.py [--repeats 30] [--crops 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from skimage import data

from fer_model.alignment import AlignConfig, FaceAligner, align_batch
from fer_model.images import decode_image, to_gray


def _astronaut_640x480_jpeg() -> bytes:
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    # The top 512x384 keeps the 4:3 aspect of 640x480 and the whole face.
    frame = cv2.resize(bgr[:384], (640, 480), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(median wall-clock ms, mean CPU ms) per call; CPU time is steadier on a shared machine."""
    fn()  # warm-up: first call pays lazy allocations
    times = []
    cpu_start = time.process_time()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), 1000 * (time.process_time() - cpu_start) / repeats


def _crops(n: int) -> list[bytes]:
    """n 48x48 gray JPEGs cut around the astronaut's face, shifted and rotated a little."""
    gray = to_gray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        dx, dy = rng.integers(-6, 7, size=2)
        matrix = cv2.getRotationMatrix2D((225.0 + dx, 114.0 + dy), float(rng.uniform(-12, 12)), 1.0)
        rotated = cv2.warpAffine(gray, matrix, (512, 512), borderMode=cv2.BORDER_REPLICATE)
        crop = cv2.resize(rotated[62 + dy : 168 + dy, 172 + dx : 278 + dx], (48, 48), interpolation=cv2.INTER_AREA)
        out.append(cv2.imencode(".jpg", crop)[1].tobytes())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--crops", type=int, default=2000)
    args = parser.parse_args()

    jpeg = _astronaut_640x480_jpeg()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    aligner = FaceAligner(AlignConfig())

    def baseline() -> object:
        gray = to_gray(decode_image(jpeg))
        return cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(50, 50))

    def ours() -> object:
        faces = aligner.detect_and_align(decode_image(jpeg))
        assert len(faces) == 1, f"expected one face, got {len(faces)}"
        return faces

    print(f"OpenCV {cv2.__version__}, {cv2.getNumThreads()} OpenCV threads, 640x480 JPEG ({len(jpeg)} bytes)")
    print(f"baseline boxes: {baseline().tolist()}; ours: {[r.box for r in ours()]}")
    rows = [
        ("baseline: full-res Haar, sf 1.1, 50 px", baseline),
        ("ours: face detection only", lambda: aligner.detect_faces(decode_image(jpeg))),
        ("ours: detect_and_align (+ eyes, crop)", ours),
    ]
    base_wall = base_cpu = 0.0
    for name, fn in rows:
        wall, cpu = _median_ms(fn, args.repeats)
        base_wall, base_cpu = (wall, cpu) if fn is baseline else (base_wall, base_cpu)
        print(f"{name:40s} {wall:6.1f} ms wall (x{base_wall / wall:.1f}), {cpu:6.1f} ms CPU (x{base_cpu / cpu:.1f})")

    crops = _crops(args.crops)
    for workers in (1, 2):
        start = time.perf_counter()
        results = align_batch(crops, is_face_crop=True, workers=workers)
        elapsed = time.perf_counter() - start
        eyes = sum(r.eyes_found for r in results)
        print(f"align_batch 48x48 crops, workers={workers}: {len(crops) / elapsed:7.0f} images/s (eyes found {eyes})")


if __name__ == "__main__":
    main()
