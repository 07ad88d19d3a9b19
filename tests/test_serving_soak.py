"""The predictor under load: a bounded soak, overload refused at once, and a clean shutdown on SIGTERM.

Real `fer-mtl serve` processes of the tiny model on 127.0.0.1, spoken to by 16 client threads.
Every distinct request of the mix is answered once, sequentially, before the load: that reference
answer is what every answer under load must equal. Latencies and refusal times are printed (run
with `-s` to see them) and recorded in docs/serving.md (Load and shutdown); they are never asserted.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

requests = pytest.importorskip("requests")

from tests._serve import Server, running_server  # noqa: E402  (needs requests)

#: The soak alone takes 1-2 minutes on 2 busy cores; a hung server must still fail the run.
pytestmark = pytest.mark.timeout(600)

NAME = "fer-mtl"
SOAK_REQUESTS = 5000
CLIENTS = 16
#: Resident memory may grow this much over the soak once warm: allocator pools and caches settle
#: during warm-up, so more is a leak (10 kB per request at this bound; a V1 face body is ~10 kB).
RSS_GROWTH_BOUND_MB = 50
#: The busy server admits this few at once, so a burst of BURST slow requests is refused in part.
SMALL_PENDING_LIMIT = 4
BURST = 16
#: Photos per slow request: each is decoded and searched for faces, in the one inference thread.
SLOW_PHOTOS = 6


@dataclass(frozen=True)
class Call:
    """One distinct request of the mix, and the answer it got when the server was idle."""

    name: str
    path: str
    body: bytes
    content_type: str = "application/json"
    reference: bytes = b""


@dataclass(frozen=True)
class Outcome:
    """What one request under load got."""

    call: str
    status: int
    latency_s: float
    same_as_reference: bool
    body: bytes


# --- the request mix ---


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _encode(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def _v1(images: list[bytes] | None = None, *, faces: np.ndarray | None = None) -> tuple[str, bytes]:
    instances = [{"b64": _b64(i)} for i in images] if images is not None else faces.tolist()
    return f"/v1/models/{NAME}:predict", json.dumps({"instances": instances}).encode()


def _v2(
    request_id: str, images: list[bytes] | None = None, *, faces: np.ndarray | None = None
) -> tuple[str, bytes]:
    if images is not None:
        tensor = {"name": "image", "shape": [len(images)], "datatype": "BYTES", "data": [_b64(i) for i in images]}
    else:
        tensor = {"name": "faces", "shape": list(faces.shape), "datatype": "UINT8", "data": faces.ravel().tolist()}
    # A fixed id: kserve invents one per request otherwise, and the answer must equal the reference.
    return f"/v2/models/{NAME}/infer", json.dumps({"id": request_id, "inputs": [tensor]}).encode()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Encoded photos: one face, two faces, none."""
    from skimage import data, transform

    # Half size (256 px): detection dominates a photo's cost, and the astronaut's face is still found.
    small = (transform.rescale(data.astronaut(), 0.5, channel_axis=2) * 255).astype(np.uint8)
    return {
        "one_face": _encode(small, "JPEG"),
        "two_faces": _encode(np.concatenate([small, small], axis=1), "JPEG"),
        "no_face": _encode(np.full((120, 160), 128, np.uint8), "PNG"),
    }


@pytest.fixture(scope="module")
def aligned_faces(sample_dataset_dir: Path) -> np.ndarray:
    """Pre-aligned 50x50 faces, as `prepare` aligned them from the synthetic sample photos."""
    from fer_model.dataset import load_dataset

    return np.asarray(load_dataset(sample_dataset_dir).images[:8])


def _mix(photos: dict[str, bytes], faces: np.ndarray) -> list[tuple[Call, int]]:
    """(call, weight): mostly pre-aligned faces, which skip detection, so 5,000 fit in the time."""
    return [
        (Call("v1 aligned x1", *_v1(faces=faces[:1])), 40),
        (Call("v1 aligned x4", *_v1(faces=faces[1:5])), 20),
        (Call("v2 aligned x3", *_v2("aligned-3", faces=faces[5:8, ..., None])), 35),
        (Call("v1 photo, one face", *_v1([photos["one_face"]])), 2),
        (Call("v1 raw photo, two faces", f"/v1/models/{NAME}:predict", photos["two_faces"], "image/jpeg"), 1),
        (Call("v2 photos, two faces and none", *_v2("photos", [photos["two_faces"], photos["no_face"]])), 1),
        (Call("v1 photo, no face", *_v1([photos["no_face"]])), 1),
    ]


def _post(session: Any, server: Server, call: Call, *, timeout: float = 120) -> Any:
    return session.post(
        server.url + call.path, data=call.body, headers={"content-type": call.content_type}, timeout=timeout
    )


def _with_references(server: Server, mix: list[tuple[Call, int]]) -> list[tuple[Call, int]]:
    """Each call answered once on an idle server: the answer it must always get."""
    out = []
    with requests.Session() as session:
        for call, weight in mix:
            r = _post(session, server, call)
            assert r.status_code == 200, f"{call.name}: {r.status_code} {r.text[:300]}"
            out.append((Call(call.name, call.path, call.body, call.content_type, r.content), weight))
    return out


def _same_answer(got: Any, want: Any) -> bool:
    """Equal JSON, probabilities to 1e-6: bytes differ only if float formatting or summation order does."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_same_answer(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same_answer, got, want))
    if isinstance(want, float):
        return isinstance(got, (int, float)) and math.isclose(got, want, abs_tol=1e-6)
    if isinstance(want, str) and want.startswith("{"):  # V2 `faces` output: JSON inside a string
        return isinstance(got, str) and _same_answer(json.loads(got), json.loads(want))
    return got == want


def _matches(call: Call, body: bytes) -> bool:
    if body == call.reference:
        return True
    try:
        return _same_answer(json.loads(body), json.loads(call.reference))
    except ValueError:
        return False


# --- running clients ---


def _client(server: Server, schedule: list[Call]) -> list[Outcome]:
    """One client: its own keep-alive session, one request at a time, as a real client would."""
    outcomes = []
    with requests.Session() as session:
        for call in schedule:
            start = time.perf_counter()
            r = _post(session, server, call)
            latency = time.perf_counter() - start
            same = r.status_code == 200 and _matches(call, r.content)
            outcomes.append(Outcome(call.name, r.status_code, latency, same, b"" if same else r.content[:300]))
    return outcomes


def _run_clients(server: Server, calls: list[Call], *, clients: int) -> list[Outcome]:
    """Send `calls`, dealt round-robin to `clients` threads."""
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(_client, server, calls[k::clients]) for k in range(clients)]
        return [outcome for f in futures for outcome in f.result()]


def _schedule(mix: list[tuple[Call, int]], n: int, *, seed: int) -> list[Call]:
    calls, weights = zip(*mix, strict=True)
    p = np.array(weights, float) / sum(weights)
    return [calls[i] for i in np.random.default_rng(seed).choice(len(calls), size=n, p=p)]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def _percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def _metric(server: Server, name: str) -> float:
    for line in requests.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


# --- servers ---


@pytest.fixture(scope="module")
def soak_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("soak") / "server.log"
    with running_server(log, "--model", str(tiny_model_dir), "--name", NAME, "--no-page") as server:
        yield server


@pytest.fixture(scope="module")
def busy_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that admits only SMALL_PENDING_LIMIT prediction requests at once.

    The SIGTERM test stops it, so it is the last test to use it (a stopped server's teardown is a no-op).
    """
    log = tmp_path_factory.mktemp("busy") / "server.log"
    limit = ["--max-pending-requests", str(SMALL_PENDING_LIMIT)]
    with running_server(log, "--model", str(tiny_model_dir), "--name", NAME, "--no-page", *limit) as server:
        yield server


# --- the soak ---


@pytest.mark.slow
def test_soak_answers_every_request_correctly_in_bounded_memory(
    soak_server: Server, photos: dict[str, bytes], aligned_faces: np.ndarray
) -> None:
    mix = _with_references(soak_server, _mix(photos, aligned_faces))
    references = {call.name: json.loads(call.reference) for call, _ in mix}
    assert references["v1 photo, no face"] == {"predictions": [{"faces": []}]}
    assert len(references["v1 raw photo, two faces"]["predictions"][0]["faces"]) == 2
    v2_faces = {o["name"]: o for o in references["v2 photos, two faces and none"]["outputs"]}["faces"]["data"]
    assert [len(json.loads(f)["faces"]) for f in v2_faces] == [2, 0]

    warm = _run_clients(soak_server, _schedule(mix, 20 * CLIENTS, seed=1), clients=CLIENTS)
    assert {o.status for o in warm} == {200}
    rss_before = _rss_mb(soak_server.process.pid)

    start = time.perf_counter()
    outcomes = _run_clients(soak_server, _schedule(mix, SOAK_REQUESTS, seed=2), clients=CLIENTS)
    elapsed = time.perf_counter() - start
    rss_after = _rss_mb(soak_server.process.pid)

    latencies = [o.latency_s for o in outcomes]
    print(
        f"\nsoak: {len(outcomes)} requests, {CLIENTS} clients, {elapsed:.1f} s ({len(outcomes) / elapsed:.0f} req/s); "
        f"latency p50 {_percentile_ms(latencies, 50):.0f} ms, p99 {_percentile_ms(latencies, 99):.0f} ms; "
        f"RSS {rss_before:.0f} MB after warm-up, {rss_after:.0f} MB after the soak"
    )
    for name in sorted({o.call for o in outcomes}):
        mine = [o.latency_s for o in outcomes if o.call == name]
        p50, p99 = _percentile_ms(mine, 50), _percentile_ms(mine, 99)
        print(f"  {name}: {len(mine)} requests, p50 {p50:.0f} ms, p99 {p99:.0f} ms")

    assert len(outcomes) == SOAK_REQUESTS
    server_errors = [o for o in outcomes if o.status >= 500]
    assert not server_errors, f"{len(server_errors)} 5xx, first: {server_errors[0]}"
    wrong = [o for o in outcomes if not o.same_as_reference]
    assert not wrong, f"{len(wrong)} answers differ from the reference, first: {wrong[0]}"
    assert rss_after - rss_before < RSS_GROWTH_BOUND_MB, (
        f"RSS grew from {rss_before:.0f} MB to {rss_after:.0f} MB over {SOAK_REQUESTS} requests"
    )
    assert soak_server.process.poll() is None


# --- overload and shutdown ---


@pytest.fixture(scope="module")
def slow_call(busy_server: Server, photos: dict[str, bytes]) -> Call:
    """A request that keeps the inference thread busy a while: several photos, two faces each."""
    call = Call("v1 slow photos", *_v1([photos["two_faces"]] * SLOW_PHOTOS))
    ((call, _),) = _with_references(busy_server, [(call, 1)])
    return call


@dataclass(frozen=True)
class Answer:
    status: int
    latency_s: float
    retry_after: str | None
    body: bytes


def _one(server: Server, call: Call, start: threading.Barrier | None = None) -> Answer:
    with requests.Session() as session:
        if start is not None:
            start.wait()
        began = time.perf_counter()
        r = _post(session, server, call)
        return Answer(r.status_code, time.perf_counter() - began, r.headers.get("retry-after"), r.content)


def _never_refused(server: Server) -> list[int]:
    """Statuses of the requests a busy server must still answer: health, readiness, metadata, metrics."""
    paths = ["/v2/health/live", "/v2/health/ready", f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}", "/metrics"]
    return [requests.get(server.url + path, timeout=30).status_code for path in paths]


@pytest.mark.slow
def test_overload_is_refused_at_once_with_retry_after(busy_server: Server, slow_call: Call) -> None:
    refused_before = _metric(busy_server, "fer_overloaded_requests_total")
    start = threading.Barrier(BURST + 1)
    with ThreadPoolExecutor(max_workers=BURST) as pool:
        futures = [pool.submit(_one, busy_server, slow_call, start) for _ in range(BURST)]
        start.wait()
        # While the admitted requests are computed, the server keeps answering everything else.
        during = _never_refused(busy_server)
        answers = [f.result() for f in futures]

    refused = [a for a in answers if a.status == 503]
    admitted = [a for a in answers if a.status == 200]
    print(
        f"\noverload: {BURST} concurrent slow requests, max_pending_requests={SMALL_PENDING_LIMIT}: "
        f"{len(admitted)} answered (p50 {_percentile_ms([a.latency_s for a in admitted], 50):.0f} ms), "
        f"{len(refused)} refused (p50 {_percentile_ms([a.latency_s for a in refused], 50):.0f} ms, "
        f"max {max((a.latency_s for a in refused), default=0) * 1000:.0f} ms)"
    )
    assert len(refused) + len(admitted) == BURST, sorted({a.status for a in answers})
    assert refused and admitted
    assert all(a.body == slow_call.reference or _matches(slow_call, a.body) for a in admitted)
    for answer in refused:
        assert answer.retry_after is not None and int(answer.retry_after) >= 1
        error = json.loads(answer.body)["error"]
        assert f"max_pending_requests={SMALL_PENDING_LIMIT}" in error and "--max-pending-requests" in error
    assert during == [200] * len(during)
    assert _metric(busy_server, "fer_overloaded_requests_total") == refused_before + len(refused)
    # Afterwards the server answers as before.
    again = _one(busy_server, slow_call)
    assert again.status == 200 and _matches(slow_call, again.body)


def _wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_answers_requests_in_flight_then_exits_0(busy_server: Server, slow_call: Call) -> None:
    images = f'fer_images_total{{model_name="{NAME}"}}'
    before = _metric(busy_server, images)
    with ThreadPoolExecutor(max_workers=SMALL_PENDING_LIMIT) as pool:
        futures = [pool.submit(_one, busy_server, slow_call) for _ in range(SMALL_PENDING_LIMIT)]
        # Every request parsed (counted on /metrics) is admitted: computing or queued for the thread.
        _wait_until(
            lambda: _metric(busy_server, images) >= before + SMALL_PENDING_LIMIT * SLOW_PHOTOS,
            what="all requests are admitted",
        )
        os.kill(busy_server.process.pid, signal.SIGTERM)
        in_flight = sum(not f.done() for f in futures)
        answers = [f.result() for f in futures]
        exit_code = busy_server.process.wait(timeout=120)

    print(f"\nSIGTERM with {in_flight} of {SMALL_PENDING_LIMIT} requests in flight: statuses "
          f"{[a.status for a in answers]}, exit code {exit_code}")
    assert in_flight >= 1, "every request finished before SIGTERM: nothing was in flight"
    assert [a.status for a in answers] == [200] * SMALL_PENDING_LIMIT
    assert all(_matches(slow_call, a.body) for a in answers)
    assert exit_code == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{busy_server.url}/v2/health/live", timeout=5)


# --- the admission limit alone (no server) ---


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


def test_admission_limit_refuses_only_predictions_beyond_the_limit() -> None:
    import asyncio

    from fer_model.serving.limits import AdmissionLimitMiddleware

    release = asyncio.Event()
    served: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["method"] == "POST":
            await release.wait()  # a prediction holds its place until released
        served.append(scope["path"])

    async def call(middleware: Any, method: str, path: str) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await middleware(_scope(method, path), None, send)
        return sent

    async def scenario() -> None:
        refusals: list[str] = []
        middleware = AdmissionLimitMiddleware(app, max_pending_requests=2, on_reject=refusals.append)
        held = [asyncio.create_task(call(middleware, "POST", f"/v1/models/m{i}:predict")) for i in range(2)]
        await asyncio.sleep(0)
        assert middleware.pending == 2
        for path in ("/v1/models/m:predict", "/v2/models/m/infer", "/v2/models/m/versions/1/infer"):
            start, body = await call(middleware, "POST", path)
            assert start["status"] == 503 and (b"retry-after", b"1") in start["headers"]
            assert "max_pending_requests=2" in json.loads(body["body"])["error"]
        for method, path in [("GET", "/v2/health/ready"), ("GET", "/v2/models/m"), ("GET", "/metrics"),
                             ("GET", "/"), ("GET", "/v1/models/m"), ("GET", "/v1/models/m:predict")]:
            assert await call(middleware, method, path) == []  # passed to the app, answered there
        assert refusals == ["overloaded"] * 3
        release.set()
        await asyncio.gather(*held)
        assert middleware.pending == 0
        assert await call(middleware, "POST", "/v2/models/m/infer") == []  # room again: admitted

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))  # a regression that deadlocks fails, not hangs


def test_max_pending_requests_is_validated_and_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from fer_cli import build_parser, main
    from fer_model.errors import ConfigError
    from fer_model.serving.limits import MIB, RequestLimits

    defaults = RequestLimits()
    assert defaults.max_pending_requests == 32
    # Every limit flag defaults to the dataclass's value, so the CLI and the library cannot disagree.
    args = build_parser().parse_args(["serve"])
    assert (args.max_images, args.max_pixels, args.max_faces_per_image, args.max_pending_requests) == (
        defaults.max_images, defaults.max_pixels, defaults.max_faces_per_image, defaults.max_pending_requests
    )
    assert args.max_body_mb * MIB == defaults.max_body_bytes
    with pytest.raises(ConfigError, match="`max_pending_requests` must be an integer >= 1, got 0"):
        RequestLimits(max_pending_requests=0)
    # The flag reaches RequestLimits, whose check fails before any model is loaded.
    assert main(["serve", "--max-pending-requests", "0", "--model", "/nonexistent"]) == 2
    assert "`max_pending_requests` must be an integer >= 1, got 0" in capsys.readouterr().err
