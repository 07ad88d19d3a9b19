"""Preprocessing speed: `fer-mtl prepare --workers 2` on FER2013-sized input, by how crops find eyes.

The input is the real FER2013 folder (`../shared/data/fer2013`, 48x48 face crops) when present,
else generated sample data in FER2013's CSV format. Each `prepare` runs as its own process
(`python -m fer_cli prepare --workers 2`), timed from start to the written artifact:
- baseline: `--crop-eyes haar` (the Haar eye cascade, the default);
- ours: `--crop-eyes blazeface` (BlazeFace eye keypoints; the goal: all 35,887 FER2013 crops in
  under 60 s on 2 cores).
Face crops skip face detection: the cost is eye detection, so the run also reports the CPU
milliseconds `align_crop` spends per crop with each, in this process, the seconds 35,887 crops
would take at the measured rate and at that CPU cost on 2 idle cores (both marked as projected),
and the share of crops whose eyes were found (from each artifact's manifest).
`--one-worker` adds the `--workers 1` Haar run (the baseline of the 2-worker speed-up); `--whole`
times BlazeFace eyes on 35,887 real crops, measured rather than projected (the projection scales the
workers' start-up, ~5 s, with the crop count): the FER2013 folder here holds Training and PublicTest
(32,298 crops) but not PrivateTest, so its PublicTest crops are given a second time, as a second
source in the same `prepare` (a copy in a scratch folder), making the count FER2013's 35,887. Each
run also reports the CPU seconds its processes used: on a busy machine those hold still when the
wall seconds do not. Where the kernel schedules by session (autogroup), `nice` on a background job
in another session does not yield to this benchmark; the committed run was started in a session of
its own at autogroup nice -10 (`setsid sh -c 'echo -10 > /proc/self/autogroup; exec python ...'`),
the share a niced background was meant to leave it; `settings.autogroup` records it.

Run: python benchmarks/bench_prepare.py [--quick] [--limit 4000] [--source KIND:PATH] [--one-worker] [--whole]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Prepared:
    seconds: float
    cpu_seconds: float  # user + system, of the prepare process and its workers
    faces: int
    eyes_share: float  # of aligned crops, those whose eye pair was found


def _prepare(sources: list[str], *, out: Path, workers: int, limit: int | None, crop_eyes: str) -> _Prepared:
    """One `fer-mtl prepare` process: wall and CPU seconds, faces in its artifact, share with eyes found."""
    import json

    cmd = [sys.executable, "-m", "fer_cli", "prepare", "--out", str(out), "--workers", str(workers),
           "--crop-eyes", crop_eyes] + [arg for s in sources for arg in ("--source", s)]
    cmd += ["--limit", str(limit)] if limit else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    manifest = json.loads((out / "manifest.json").read_text())
    per_source = manifest["alignment"]["per_source"].values()
    eyes = sum(s["eyes_found"] for s in per_source) / max(1, sum(s["aligned"] for s in per_source))
    print(f"  --workers {workers} --crop-eyes {crop_eyes}: {manifest['num_samples']} crops, {seconds:.1f} s "
          f"({cpu:.1f} CPU s), eyes found {eyes:.1%}, load {_load()}", flush=True)
    return _Prepared(seconds, cpu, int(manifest["num_samples"]), eyes)


def _autogroup() -> str | None:
    """This session's scheduler group and its nice, where the kernel groups by session (autogroup).

    There a process's own nice weighs only against its own session: a `nice -n 10` job started in
    another session still takes a core from this benchmark.
    """
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return None


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _fer2013_size_sources(source: str, scratch: Path) -> tuple[list[str], str]:
    """Sources holding FER2013's 35,887 crops, and how they were made.

    The Kaggle folder has Training and PublicTest (32,298); its PublicTest crops, copied once more
    into `scratch`, stand in for PrivateTest (3,589 crops as well). Other sources are used as they are.
    """
    kind, _, path = source.partition(":")
    validation = Path(path) / "validation"
    if kind != "fer2013-folder" or not validation.is_dir():
        return [source], "whole source"
    copy = scratch / "publictest-again"
    shutil.copytree(validation, copy / "validation")
    return [source, f"fer2013-folder:{copy}"], "FER2013 folder + its PublicTest again"


def _align_crop_cpu_ms(source: str, n: int, crop_eyes: str) -> float:
    """CPU ms per crop of `FaceAligner.align_crop` (decoded, one thread): the floor under prepare's rate."""
    import cv2

    from fer_model.alignment import AlignConfig, FaceAligner
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
    aligner = FaceAligner(AlignConfig(crop_eyes=crop_eyes))  # type: ignore[arg-type]
    aligner.align_crop(images[0])  # loads the model outside the timing
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
    parser.add_argument("--one-worker", action="store_true", help="also time --workers 1 (Haar eyes)")
    parser.add_argument("--whole", action="store_true", help="also time BlazeFace eyes on the whole source")
    args = parser.parse_args()
    if args.quick:
        args.limit = 1500

    run = Run(args.name or ("prepare_quick" if args.quick else "prepare"), vars(args))
    run.settings["autogroup"] = _autogroup()
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        source = args.source or _default_source(Path(tmp), args.limit)
        run.settings["source_used"] = source
        print(f"source {source}, {args.limit} crops per run", flush=True)
        ours = _prepare([source], out=Path(tmp) / "bf", workers=2, limit=args.limit, crop_eyes="blazeface")
        haar = _prepare([source], out=Path(tmp) / "haar", workers=2, limit=args.limit, crop_eyes="haar")
        one = (_prepare([source], out=Path(tmp) / "w1", workers=1, limit=args.limit, crop_eyes="haar")
               if args.one_worker else None)
        whole = None
        if args.whole:
            sources, made = _fer2013_size_sources(source, Path(tmp))
            run.settings["whole_sources"] = made
            whole = _prepare(sources, out=Path(tmp) / "whole", workers=2, limit=None, crop_eyes="blazeface")
            run.settings["whole_loadavg_end"] = _load()
        n_cpu = min(500, args.limit)
        cpu_ms = {eyes: _align_crop_cpu_ms(source, n_cpu, eyes) for eyes in ("blazeface", "haar")}
    run.add(Figure("prepare --workers 2, face crops, BlazeFace eyes", ours.faces / ours.seconds, "crops/s",
                   baseline="Haar eyes", baseline_value=haar.faces / haar.seconds))
    if one is not None:
        run.add(Figure("prepare --workers 2, face crops, Haar eyes", haar.faces / haar.seconds, "crops/s",
                       baseline="--workers 1", baseline_value=one.faces / one.seconds))
    run.add(Figure(f"prepare --workers 2, {FER2013_SIZE} crops, BlazeFace eyes (projected)",
                   FER2013_SIZE * ours.seconds / ours.faces, "s", baseline="target", baseline_value=60.0,
                   higher_is_better=False))
    if whole is not None:
        made = run.settings["whole_sources"]
        run.add(Figure(f"prepare --workers 2, {whole.faces} crops ({made}), BlazeFace eyes", whole.seconds,
                       "s", baseline=f"target (60 s per {FER2013_SIZE})",
                       baseline_value=60.0 * whole.faces / FER2013_SIZE, higher_is_better=False))
        # CPU seconds hold still on a busy machine; Haar's are scaled from its run to the same crop count.
        run.add(Figure(f"prepare --workers 2, {whole.faces} crops, BlazeFace eyes, CPU s", whole.cpu_seconds, "s",
                       baseline="Haar eyes (projected from its run)",
                       baseline_value=haar.cpu_seconds * whole.faces / haar.faces, higher_is_better=False))
        # Every CPU second of that run (start-up, reading, decoding, writing) over 2 idle cores: its wall
        # time when nothing else runs. Contention inflates CPU time too, so a busy machine overstates it.
        run.add(Figure(f"{whole.faces} crops, BlazeFace eyes, that run's CPU s / 2 (projected, 2 idle cores)",
                       whole.cpu_seconds / 2, "s", baseline="target", baseline_value=60.0 * whole.faces / FER2013_SIZE,
                       higher_is_better=False))
    run.add(Figure("crops with an eye pair found, BlazeFace", 100 * ours.eyes_share, "%",
                   baseline="Haar", baseline_value=100 * haar.eyes_share))
    run.add(Figure("align_crop CPU per crop, BlazeFace eyes", cpu_ms["blazeface"], "ms",
                   baseline="Haar eyes", baseline_value=cpu_ms["haar"], higher_is_better=False))
    # Load-independent: the CPU work alone, spread over 2 otherwise idle cores.
    run.add(Figure(f"{FER2013_SIZE} crops, BlazeFace eyes, CPU floor on 2 idle cores (projected)",
                   FER2013_SIZE * cpu_ms["blazeface"] / 2000, "s", baseline="target", baseline_value=60.0,
                   higher_is_better=False))
    run.write()


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
