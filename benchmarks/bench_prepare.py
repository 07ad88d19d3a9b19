"""Preprocessing speed: `fer-mtl prepare` on FER2013-sized input, 2 workers against 1, in one run.

The input is the real FER2013 folder (`../shared/data/fer2013`, 48x48 face crops) when present,
else generated sample data in FER2013's CSV format. Each `prepare` runs as its own process
(`python -m fer_cli prepare`), timed from start to the written artifact, TensorFlow-free:
- baseline: `--workers 1`;
- ours: `--workers 2` (the goal: all 35,887 FER2013 crops in under 60 s on 2 cores).
Face crops skip face detection: the cost is eye detection (Haar, `AlignConfig.eye_search_width`),
so the run also reports the CPU milliseconds `align_crop` spends per crop, in this process, and
the seconds 35,887 crops would take at the measured 2-worker rate and at that CPU cost on 2 idle
cores (both marked as projected).

Run: python benchmarks/bench_prepare.py [--quick] [--limit 4000] [--source KIND:PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import Figure, Run

FER2013_SIZE = 35_887
_REAL_FER2013 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013"
_SHARED_FER2013 = Path("/work/shared/data/fer2013")


def _default_source(tmp: Path, n: int) -> str:
    for path in (_REAL_FER2013, _SHARED_FER2013):
        if (path / "train").is_dir():
            return f"fer2013-folder:{path}"
    from fer_model.sample_data import write_sample_data

    written = write_sample_data(tmp / "sample", n=n, seed=0)
    return f"fer2013-csv:{written['fer2013_csv']}"


def _prepare_seconds(source: str, *, out: Path, workers: int, limit: int) -> tuple[float, int]:
    """Wall seconds of one `fer-mtl prepare` process, and how many faces its artifact holds."""
    import json

    cmd = [sys.executable, "-m", "fer_cli", "prepare", "--source", source, "--out", str(out),
           "--workers", str(workers), "--limit", str(limit)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    return seconds, int(manifest["num_samples"])


def _align_crop_cpu_ms(source: str, n: int) -> float:
    """CPU ms per crop of `FaceAligner.align_crop` (decoded, one thread): the floor under prepare's rate."""
    import cv2

    from fer_model.alignment import FaceAligner
    from fer_model.readers import read_source
    from fer_model.records import Record

    cv2.setNumThreads(1)
    images = []
    for item in read_source(source):
        if isinstance(item, Record) and not isinstance(item.image, bytes):
            images.append(item.image)
        elif isinstance(item, Record):
            from fer_model.images import decode_image

            images.append(decode_image(item.image))
        if len(images) >= n:
            break
    aligner = FaceAligner()
    start = time.process_time()
    for image in images:
        aligner.align_crop(image)
    return 1000 * (time.process_time() - start) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,500 crops per run (about a minute)")
    parser.add_argument("--limit", type=int, default=6000, help="crops per run (default: %(default)s; "
                        f"{FER2013_SIZE} for the whole FER2013 size)")
    parser.add_argument("--source", default=None, help="KIND:PATH (default: real FER2013 if present, else sample)")
    parser.add_argument("--name", default=None, help="result file stem (default: prepare, prepare_quick)")
    args = parser.parse_args()
    if args.quick:
        args.limit = 1500

    run = Run(args.name or ("prepare_quick" if args.quick else "prepare"), vars(args))
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        source = args.source or _default_source(Path(tmp), args.limit)
        run.settings["source_used"] = source
        print(f"source {source}, {args.limit} crops per run", flush=True)
        one, n_one = _prepare_seconds(source, out=Path(tmp) / "w1", workers=1, limit=args.limit)
        two, n_two = _prepare_seconds(source, out=Path(tmp) / "w2", workers=2, limit=args.limit)
        cpu_ms = _align_crop_cpu_ms(source, min(500, args.limit))
    run.add(Figure("prepare --workers 2, face crops", n_two / two, "crops/s",
                   baseline="--workers 1", baseline_value=n_one / one))
    run.add(Figure(f"prepare --workers 2, {FER2013_SIZE} crops (projected)", FER2013_SIZE * two / n_two, "s",
                   baseline="target", baseline_value=60.0, higher_is_better=False))
    run.add(Figure("align_crop CPU per crop (eye detection)", cpu_ms, "ms"))
    # Load-independent: the CPU work alone, spread over 2 otherwise idle cores.
    run.add(Figure(f"{FER2013_SIZE} crops, CPU floor on 2 idle cores (projected)", FER2013_SIZE * cpu_ms / 2000, "s",
                   baseline="target", baseline_value=60.0, higher_is_better=False))
    run.write()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
