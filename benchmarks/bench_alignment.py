"""Alignment speed: downscaled detection vs the `fer` package's full-resolution Haar recipe.

Times, in one process on the same 640x480 JPEG of skimage's astronaut:
All rows include JPEG decoding. The speed-up is against the baseline in the same run.
- baseline: decode + Haar frontal-face detection at full resolution, scaleFactor 1.1,
  minNeighbors 5, minSize 50 (what `fer.FER` does before its CNN; ~all of its time),
- ours: decode + `FaceAligner.detect_and_align` (downscaled detection, eyes, levelling, crop),
and `align_batch` throughput on 48x48 face-crop JPEGs with workers=1 vs workers=2.

Run: python benchmarks/bench_alignment.py [--quick] [--repeats 30] [--crops 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from _machine import Figure, Run
from _photos import astronaut_640x480_jpeg
from skimage import data

from fer_model.alignment import AlignConfig, FaceAligner, align_batch
from fer_model.images import decode_image, to_gray


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
    parser.add_argument("--quick", action="store_true", help="10 repeats, 400 crops")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--crops", type=int, default=2000)
    parser.add_argument("--name", default=None, help="result file stem (default: alignment, alignment_quick)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.crops = 10, 400

    run = Run(args.name or ("alignment_quick" if args.quick else "alignment"), vars(args))
    jpeg = astronaut_640x480_jpeg()
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
    base_wall, base_cpu = _median_ms(baseline, args.repeats)
    rows = [("face detection only", lambda: aligner.detect_faces(decode_image(jpeg))),
            ("detect_and_align (+ eyes, crop)", ours)]
    for name, fn in rows:
        wall, cpu = _median_ms(fn, args.repeats)
        run.add(Figure(f"640x480 JPEG: {name}, wall", wall, "ms", baseline="fer's full-res Haar",
                       baseline_value=base_wall, higher_is_better=False))
        run.add(Figure(f"640x480 JPEG: {name}, CPU", cpu, "ms", baseline="fer's full-res Haar",
                       baseline_value=base_cpu, higher_is_better=False))

    crops = _crops(args.crops)
    rates = {}
    for workers in (1, 2):
        start = time.perf_counter()
        align_batch(crops, is_face_crop=True, workers=workers)
        rates[workers] = len(crops) / (time.perf_counter() - start)
    run.add(Figure("align_batch 48x48 crops, workers=2", rates[2], "images/s", baseline="workers=1",
                   baseline_value=rates[1]))
    run.write()


if __name__ == "__main__":
    main()
