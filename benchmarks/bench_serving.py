"""Serving speed: one 640x480 JPEG per request against `fer-mtl serve` on 127.0.0.1.

Measures, against a server started here (one worker, gRPC off):
- latency p50 / p99 of sequential V1 requests (`{"instances": [{"b64": ...}]}`), client wall time,
- requests/s and p50 / p99 with 8 concurrent clients (threads), bounded by count and by time,
- the baseline in the same run: `Predictor.predict([jpeg])` in-process (decode, detect, align, CNN),
  alternated with the sequential requests, so `server p50 / direct p50` is what HTTP, JSON, base64
  and KServe add.

The model: `--model DIR`, else the paper's architecture at `--width` with untrained weights written
to a temporary artifact (weights do not change the cost). Detection dominates either way.

`--detector haar|blazeface` serves (and runs the baseline) with that face detector instead of the
model's own setting.

Run: .venv/bin/python benchmarks/bench_serving.py [--model DIR] [--detector D] [--requests 60] [--seconds 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import requests
from skimage import data

from fer_model.face_detector import DETECTORS


def _astronaut_640x480_jpeg() -> bytes:
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    # The top 512x384 keeps the 4:3 aspect of 640x480 and the whole face.
    frame = cv2.resize(bgr[:384], (640, 480), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def _untrained_artifact(out: Path, *, width: float) -> Path:
    """A model artifact with the paper's layers at `width` and random weights."""
    from fer_model.alignment import AlignConfig
    from fer_model.model import ModelConfig, build_model
    from fer_model.model_artifact import save_model_artifact
    from fer_model.training import TrainConfig

    config = ModelConfig(width=width)
    return save_model_artifact(
        out,
        model=build_model(config),
        model_config=config,
        train_config=TrainConfig(epochs=1),
        history={},
        best_epoch=0,
        dataset_manifest_sha256="0" * 64,
        alignment={k: getattr(AlignConfig(), k) for k in AlignConfig.__dataclass_fields__},
    )


def _percentiles(times: list[float]) -> tuple[float, float]:
    ms = sorted(1000 * t for t in times)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return statistics.median(ms), p99


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(model_dir: Path, log: Path, detector: str | None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("fer-mtl")), "serve", "--model", str(model_dir), "--port", str(port)]
    if detector:
        cmd += ["--detector", detector]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                return process, url
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("server not ready after 180 s")


def _mean_predict_ms(metrics: str) -> float:
    total = count = 0.0
    for line in metrics.splitlines():
        if line.startswith("request_predict_seconds_sum{"):
            total = float(line.split()[-1])
        elif line.startswith("request_predict_seconds_count{"):
            count = float(line.split()[-1])
    return 1000 * total / count if count else float("nan")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model artifact (default: untrained, --width)")
    parser.add_argument("--width", type=float, default=1.0, help="width of the untrained model (default: 1.0)")
    parser.add_argument("--requests", type=int, default=60, help="sequential requests (default: 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    parser.add_argument("--concurrent-requests", type=int, default=240, help="cap on concurrent requests")
    parser.add_argument("--seconds", type=float, default=20.0, help="cap on the concurrent phase, seconds")
    parser.add_argument("--detector", choices=DETECTORS, default=None,
                        help="face detector (default: the model's alignment setting)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()

    jpeg = _astronaut_640x480_jpeg()
    body = json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}]})
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model_dir = args.model or _untrained_artifact(Path(tmp) / "model", width=args.width)
        process, url = _start(model_dir, Path(tmp) / "server.log", args.detector)
        try:
            endpoint = f"{url}/v1/models/fer-mtl:predict"
            session = requests.Session()
            headers = {"content-type": "application/json"}
            first = session.post(endpoint, data=body, headers=headers, timeout=60)
            assert first.status_code == 200 and len(first.json()["predictions"][0]["faces"]) == 1, first.text
            # Baseline in this process: loaded now, then alternated call by call with the server
            # requests, so load from other processes on the machine affects both the same way.
            from fer_model.predict import Predictor

            predictor = Predictor(model_dir, detector=args.detector)
            predictor.predict([jpeg])
            sequential, direct = [], []
            for _ in range(args.requests):
                start = time.perf_counter()
                r = session.post(endpoint, data=body, headers=headers, timeout=60)
                sequential.append(time.perf_counter() - start)
                assert r.status_code == 200
                start = time.perf_counter()
                predictor.predict([jpeg])
                direct.append(time.perf_counter() - start)
            seq_p50, seq_p99 = _percentiles(sequential)
            # Server-side share of that: kserve's predict histogram (decode, detect, align, CNN in our model).
            predict_mean_ms = _mean_predict_ms(session.get(f"{url}/metrics", timeout=10).text)

            lock = threading.Lock()
            concurrent: list[float] = []
            errors = [0]
            budget = [args.concurrent_requests]
            stop_at = time.monotonic() + args.seconds

            def client() -> None:
                own = requests.Session()
                while time.monotonic() < stop_at:
                    with lock:
                        if budget[0] <= 0:
                            return
                        budget[0] -= 1
                    start = time.perf_counter()
                    r = own.post(endpoint, data=body, headers=headers, timeout=120)
                    elapsed = time.perf_counter() - start
                    with lock:
                        concurrent.append(elapsed)
                        errors[0] += r.status_code != 200

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            wall = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - wall
            con_p50, con_p99 = _percentiles(concurrent)
            rss = _rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)

        dir_p50, dir_p99 = _percentiles(direct)

    results = {
        "image": "astronaut 640x480 JPEG, one face",
        "model": str(args.model) if args.model else f"untrained, width {args.width}",
        "detector": predictor.align_config.detector,
        "cpus": os.cpu_count(),
        "sequential": {
            "requests": len(sequential),
            "p50_ms": seq_p50,
            "p99_ms": seq_p99,
            "server_predict_mean_ms": predict_mean_ms,
        },
        "concurrent": {
            "clients": args.clients,
            "requests": len(concurrent),
            "errors": errors[0],
            "seconds": wall,
            "requests_per_s": len(concurrent) / wall,
            "p50_ms": con_p50,
            "p99_ms": con_p99,
        },
        "direct_predictor": {"calls": len(direct), "p50_ms": dir_p50, "p99_ms": dir_p99},
        "server_over_direct_p50": seq_p50 / dir_p50,
        "server_rss_mb": rss,
    }
    print(f"model: {results['model']}; {results['image']}; {results['cpus']} CPUs")
    print(
        f"sequential   {len(sequential):4d} requests: p50 {seq_p50:7.1f} ms   p99 {seq_p99:7.1f} ms   "
        f"(in the model's predict: mean {predict_mean_ms:.1f} ms)"
    )
    print(
        f"{args.clients} clients    {len(concurrent):4d} requests: p50 {con_p50:7.1f} ms   p99 {con_p99:7.1f} ms   "
        f"{len(concurrent) / wall:6.1f} req/s   ({errors[0]} errors, {wall:.1f} s)"
    )
    print(f"direct Predictor.predict  : p50 {dir_p50:7.1f} ms   p99 {dir_p99:7.1f} ms   ({1000 / dir_p50:.1f} calls/s)")
    print(f"server p50 / direct p50   : {seq_p50 / dir_p50:.2f}x   server RSS {rss:.0f} MB")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 1 if errors[0] else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
