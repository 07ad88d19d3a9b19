"""Face detection: BlazeFace against the Haar cascade, accuracy on real photographs and latency.

Accuracy, on real faces from ../shared/data (benchmarks may read real data; tests may not):
- UTKFace (200x200 aligned colour crops, one face each) and FER2013 (48x48 gray crops), each
  (a) as it comes, the crop as the whole image, and (b) in a frame: resized to 200 px and pasted
  into a plain 640x480 frame, as a photo with one face;
- images with >= 1 face found; for UTKFace also faces found where the crop puts them (IoU >= 0.5
  with the crop's centred 80%: UTKFace faces fill their crops), and the tilt of the eye line found
  (the crops are aligned, so |tilt| is the error) with the share of faces whose eyes were found;
- the Haar-like box calibration (`fer_model.alignment._HAAR_LIKE`): median Haar side / BlazeFace
  side and centre shift, over faces both detectors found alone in a frame.

Latency, one 640x480 JPEG with one face (the astronaut photo), all in this process and interleaved
call by call so load from elsewhere hits every variant alike: face detection alone
(`FaceAligner.detect_faces` on the decoded image) and the whole `Predictor.predict([jpeg])`
(decode, detect, align, four-task CNN) with each detector, p50/p99 and ratios against Haar.

Run: .venv/bin/python benchmarks/bench_detection.py [--quick] [--images 400] [--calls 200] [--data DIR]
Writes benchmarks/results/detection.json (detection_quick.json) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _machine import Figure, Run
from _photos import astronaut_640x480_jpeg

from fer_model.alignment import _HAAR_LIKE, AlignConfig, FaceAligner, eye_tilt
from fer_model.face_detector import BlazeFaceDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FRAME = (480, 640)
DETECTORS = {"haar": AlignConfig(detector="haar"), "blazeface": AlignConfig(detector="blazeface")}


def _sample(paths: list[Path], n: int) -> list[Path]:
    """`n` paths spread evenly over the sorted list (every class folder, every age), reproducible."""
    paths = sorted(paths)
    step = max(1, len(paths) // n)
    return paths[::step][:n]


def _in_frame(image: np.ndarray) -> np.ndarray:
    """The crop resized to 200 px and pasted at the centre of a plain 640x480 frame."""
    face = cv2.resize(image, (200, 200), interpolation=cv2.INTER_LINEAR)
    frame = np.full((*FRAME, 3) if face.ndim == 3 else FRAME, 110, np.uint8)
    y, x = (FRAME[0] - 200) // 2, (FRAME[1] - 200) // 2
    frame[y : y + 200, x : x + 200] = face
    return frame


def _crop_region(shape: tuple[int, ...], protocol: str) -> tuple[int, int, int]:
    """(x, y, side) of the face crop inside the detector's input."""
    if protocol == "as is":
        return 0, 0, min(shape[:2])
    return (FRAME[1] - 200) // 2, (FRAME[0] - 200) // 2, 200


def _central(box: tuple[int, int, int, int], region: tuple[int, int, int]) -> bool:
    """The box overlaps the expected face box of an aligned crop (its centred 80%) by IoU >= 0.5."""
    x, y, side = region
    margin = round(0.1 * side)
    expected = (x + margin, y + margin, side - 2 * margin, side - 2 * margin)
    ix = max(0, min(box[0] + box[2], expected[0] + expected[2]) - max(box[0], expected[0]))
    iy = max(0, min(box[1] + box[3], expected[1] + expected[3]) - max(box[1], expected[1]))
    inter = ix * iy
    return inter / (box[2] * box[3] + expected[2] * expected[3] - inter) >= 0.5


def _accuracy(run: Run, name: str, images: list[np.ndarray], *, check_central: bool) -> None:
    """Faces found (as is and in a frame) by each detector; for UTKFace also central boxes and eye tilt."""
    for protocol in ("as is", "in frame"):
        inputs = images if protocol == "as is" else [_in_frame(i) for i in images]
        counts: dict[str, dict[str, float]] = {}
        for detector, base in DETECTORS.items():
            # As is, a FER2013 crop is 48 px: no minimum face size, or Haar could not find any.
            config = AlignConfig(**{**base.to_dict(), "min_face_size": 8 if protocol == "as is" else 48})
            aligner = FaceAligner(config)
            results = [aligner.detect_and_align(i, max_faces=1) for i in inputs]
            found = [r[0] for r in results if r]
            c = {"found": 100 * len(found) / len(inputs)}
            if check_central:
                central = [bool(r) and _central(r[0].box, _crop_region(i.shape, protocol))
                           for r, i in zip(results, inputs, strict=True)]
                c["central"] = 100 * sum(central) / len(inputs)
                tilts = [abs(eye_tilt(*r.eyes)) for r in found if r.eyes_found]
                c["eyes"] = 100 * len(tilts) / len(inputs)
                c["tilt_p50"] = statistics.median(tilts) if tilts else float("nan")
                c["tilt_over5"] = 100 * sum(t > 5 for t in tilts) / max(1, len(tilts))
            counts[detector] = c
        haar, blaze = counts["haar"], counts["blazeface"]
        for key, label, unit, higher in (("found", "images with a face", "%", True),
                                         ("central", "face where the crop puts it", "%", True),
                                         ("eyes", "eye pair found", "%", True),
                                         ("tilt_p50", "median |eye tilt| (aligned crops: error)", "deg", False),
                                         ("tilt_over5", "eye tilt > 5 deg", "% of pairs", False)):
            if key in blaze:
                run.add(Figure(f"{name} {protocol}: {label}, BlazeFace", blaze[key], unit, "Haar", haar[key],
                               higher_is_better=higher))


def _calibration(run: Run, images: list[np.ndarray]) -> None:
    """BlazeFace box -> Haar box of the same face, per BlazeFace model, on faces both found alone."""
    haar = FaceAligner(AlignConfig(detector="haar"))
    for model in ("short", "full"):
        detector = BlazeFaceDetector(model=model)
        rows = []
        for image in images:
            frame = _in_frame(image)
            (h_boxes, b_found) = haar.detect_faces(frame), detector.detect(frame)
            if len(h_boxes) == 1 and len(b_found) == 1:
                (_, hy, hw, hh), (_, y, w, h) = h_boxes[0], b_found[0].box
                rows.append((hw / w, (hy + hh / 2 - y - h / 2) / w))
        scale, shift = np.median(np.array(rows), axis=0) if rows else (float("nan"), float("nan"))
        used = _HAAR_LIKE[model]
        print(f"calibration {model}: Haar side / BlazeFace side {scale:.3f} (used {used[0]}), centre shift "
              f"{shift:+.3f} sides (used {used[1]:+.3f}), over {len(rows)} UTKFace faces")
        run.settings[f"calibration_{model}"] = {"scale": float(scale), "shift": float(shift), "faces": len(rows)}


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(1000 * t for t in seconds)
    return statistics.median(ms), ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]


def _latency(run: Run, *, calls: int, model_dir: Path | None) -> None:
    """Detection alone and the whole Predictor, per detector, interleaved call by call."""
    from fer_model.images import decode_image
    from fer_model.predict import Predictor

    jpeg = astronaut_640x480_jpeg()
    image = decode_image(jpeg)
    aligners = {d: FaceAligner(c) for d, c in DETECTORS.items()}
    predictors = {d: Predictor(model_dir, detector=d) for d in DETECTORS}
    for d in DETECTORS:  # warm up (interpreters, first Keras call) and check one face each
        assert len(aligners[d].detect_faces(image)) == 1, d
        assert len(predictors[d].predict([jpeg])[0]) == 1, d
    times: dict[str, list[float]] = {f"{what} {d}": [] for what in ("detect", "predict") for d in DETECTORS}
    for _ in range(calls):
        for d in DETECTORS:
            times[f"detect {d}"].append(_timed(lambda d=d: aligners[d].detect_faces(image)))
            times[f"predict {d}"].append(_timed(lambda d=d: predictors[d].predict([jpeg])))
    for what, label in (("detect", "face detection"), ("predict", "Predictor.predict (4 tasks)")):
        (h50, h99), (b50, b99) = _percentiles(times[f"{what} haar"]), _percentiles(times[f"{what} blazeface"])
        run.add(Figure(f"640x480 JPEG {label} p50, BlazeFace", b50, "ms", "Haar", h50, higher_is_better=False))
        run.add(Figure(f"640x480 JPEG {label} p99, BlazeFace", b99, "ms", "Haar", h99, higher_is_better=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 images per dataset, 60 timed calls")
    parser.add_argument("--images", type=int, default=400, help="images per dataset (default: 400)")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per variant (default: 200)")
    parser.add_argument("--model", type=Path, default=None, help="model artifact (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"real data folder (default: {DATA})")
    parser.add_argument("--name", default=None, help="result file stem (default: detection, detection_quick)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.calls = 100, 60
    run = Run(args.name or ("detection_quick" if args.quick else "detection"),
              {"images": args.images, "calls": args.calls, "model": str(args.model or "shipped pretrained")})
    _latency(run, calls=args.calls, model_dir=args.model)
    utk = [cv2.imread(str(p)) for p in _sample(list((args.data / "utkface").glob("*.jpg")), args.images)]
    fer = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
           for p in _sample(list((args.data / "fer2013").glob("*/*/*.jpg")), args.images)]
    if utk and fer:
        _accuracy(run, f"UTKFace ({len(utk)})", utk, check_central=True)
        _accuracy(run, f"FER2013 ({len(fer)})", fer, check_central=False)
        _calibration(run, utk)
    else:  # the latency needs no data; the accuracy needs real faces, which are not shipped
        print(f"no UTKFace or FER2013 images under {args.data} (--data): accuracy not measured", file=sys.stderr)
    run.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
