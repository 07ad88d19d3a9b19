"""The KServe predictor, end to end: `fer-mtl serve` in a subprocess on 127.0.0.1, spoken to over HTTP.

One server (module fixture) serves the tiny model with small limits so the limit checks are cheap.
Also: the TF Serving path (the SavedModel signature docs/serving.md documents) and the pure request
parsing, which needs no server.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

requests = pytest.importorskip("requests")

from tests._serve import Server, running_server  # noqa: E402  (needs requests)

NAME = "fer-mtl"
MAX_BODY_MB = 2
MAX_IMAGES = 4
MAX_PIXELS = 4_000_000
SIZE = 50


@contextlib.contextmanager
def _running_server(model_dir: Path, log: Path, *extra: str) -> Iterator[Server]:
    """`fer-mtl serve` of `model_dir` on a free loopback port, until the block ends."""
    with running_server(log, "--model", str(model_dir), "--name", NAME, *extra) as server:
        yield server


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    limits = ["--max-body-mb", str(MAX_BODY_MB), "--max-images", str(MAX_IMAGES), "--max-pixels", str(MAX_PIXELS)]
    with _running_server(tiny_model_dir, log, *limits) as running:
        yield running


def _jpeg(image: np.ndarray, *, size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    from PIL import Image

    pil = Image.fromarray(image)
    if size:
        pil = pil.resize(size)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    from skimage import data

    return _jpeg(data.astronaut())


@pytest.fixture(scope="module")
def blank_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((120, 160), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid-looking PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _v1(server: Server, body: Any, *, name: str = NAME) -> requests.Response:
    return requests.post(f"{server.url}/v1/models/{name}:predict", json=body, timeout=60)


def _v2(server: Server, body: Any, *, name: str = NAME) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=60)


def _v2_images(*images: bytes, request_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES", "data": [_b64(i) for i in images]}]
    }
    if request_id:
        body["id"] = request_id
    return body


def _outputs(response: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["name"]: o for o in response["outputs"]}


@pytest.fixture(scope="module")
def model_tasks(tiny_model_dir: Path) -> dict[str, list[str]]:
    from fer_model.model_artifact import read_model_config

    return {t: list(c) for t, c in read_model_config(tiny_model_dir).tasks.items()}


# --- answers ---


def test_v1_astronaut_has_one_face_with_probabilities_per_task(
    server: Server, astronaut_jpeg: bytes, model_tasks: dict[str, list[str]]
) -> None:
    r = _v1(server, {"instances": [{"b64": _b64(astronaut_jpeg)}]})
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["predictions"]
    (face,) = prediction["faces"]
    x, y, w, h = face["box"]
    assert 100 < x < 300 and 0 < y < 200 and w > 40 and h > 40  # astronaut's face is upper middle
    assert set(face["predictions"]) == set(model_tasks)
    for task, classes in model_tasks.items():
        probs = face["predictions"][task]["probabilities"]
        assert list(probs) == classes
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
        assert face["predictions"][task]["label"] == max(probs, key=probs.get)


def test_v2_images_match_v1_and_echo_the_id(
    server: Server, astronaut_jpeg: bytes, blank_png: bytes, model_tasks: dict[str, list[str]]
) -> None:
    v1_face = _v1(server, {"instances": [{"b64": _b64(astronaut_jpeg)}]}).json()["predictions"][0]["faces"][0]
    r = _v2(server, _v2_images(astronaut_jpeg, blank_png, request_id="req-42"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "req-42" and body["model_name"] == NAME
    out = _outputs(body)
    assert out["faces"]["shape"] == [2] and out["faces"]["datatype"] == "BYTES"
    per_image = [json.loads(s) for s in out["faces"]["data"]]
    assert len(per_image[0]["faces"]) == 1 and per_image[1]["faces"] == []  # one face, then none
    assert out["image_index"] == {**out["image_index"], "shape": [1], "datatype": "INT32", "data": [0]}
    assert out["box"]["shape"] == [1, 4] and out["box"]["data"] == v1_face["box"]
    for task, classes in model_tasks.items():
        assert out[task]["shape"] == [1, len(classes)] and out[task]["datatype"] == "FP32"
        assert out[task]["parameters"]["classes"] == ",".join(classes)
        expected = [v1_face["predictions"][task]["probabilities"][c] for c in classes]
        assert out[task]["data"] == pytest.approx(expected, abs=1e-6)


def test_v2_without_id_gets_one(server: Server, astronaut_jpeg: bytes) -> None:
    a, b = (_v2(server, _v2_images(astronaut_jpeg)).json()["id"] for _ in range(2))
    assert a and b and a != b


def test_v2_aligned_faces(server: Server, model_tasks: dict[str, list[str]]) -> None:
    faces = np.random.default_rng(0).integers(0, 256, size=(3, SIZE, SIZE, 1), dtype=np.uint8)
    body = {
        "inputs": [{"name": "faces", "shape": list(faces.shape), "datatype": "UINT8", "data": faces.ravel().tolist()}]
    }
    r = _v2(server, body)
    assert r.status_code == 200, r.text
    out = _outputs(r.json())
    assert out["image_index"]["data"] == [0, 1, 2]
    assert out["box"]["data"] == [-1] * 12  # no detection ran
    for task, classes in model_tasks.items():
        probs = np.array(out[task]["data"]).reshape(out[task]["shape"])
        assert probs.shape == (3, len(classes))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # The same faces through V1 (nested lists, one face per instance) give the same numbers.
    v1 = _v1(server, {"instances": faces[..., 0].tolist()}).json()["predictions"]
    assert [p["faces"][0]["box"] for p in v1] == [None] * 3
    emotion = [
        [p["faces"][0]["predictions"]["emotion"]["probabilities"][c] for c in model_tasks["emotion"]] for p in v1
    ]
    np.testing.assert_allclose(np.array(emotion).ravel(), out["emotion"]["data"], atol=1e-6)


def test_v2_requested_outputs_only(server: Server, astronaut_jpeg: bytes) -> None:
    body = {**_v2_images(astronaut_jpeg), "outputs": [{"name": "emotion"}, {"name": "box"}]}
    r = _v2(server, body)
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["emotion", "box"]


def test_v2_binary_image_input_is_refused_with_the_workaround(server: Server, astronaut_jpeg: bytes) -> None:
    payload = struct.pack("<I", len(astronaut_jpeg)) + astronaut_jpeg
    header = json.dumps(
        {
            "inputs": [
                {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(payload)}}
            ]
        }
    ).encode()
    r = requests.post(
        f"{server.url}/v2/models/{NAME}/infer",
        data=header + payload,
        headers={"inference-header-content-length": str(len(header)), "content-type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 400
    assert "base64-encoded in JSON" in r.json()["error"]


def test_raw_image_body_on_v1(server: Server, astronaut_jpeg: bytes) -> None:
    r = requests.post(
        f"{server.url}/v1/models/{NAME}:predict",
        data=astronaut_jpeg,
        headers={"content-type": "image/jpeg"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"][0]["faces"]) == 1


def test_image_without_a_face_is_an_empty_list(server: Server, blank_png: bytes) -> None:
    r = _v1(server, {"instances": [{"b64": _b64(blank_png)}]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": [{"faces": []}]}


def test_server_and_predictor_agree(server: Server, astronaut_jpeg: bytes, tiny_model_dir: Path) -> None:
    from fer_model.predict import Predictor

    (faces,) = Predictor(tiny_model_dir).predict([astronaut_jpeg])
    served = _v1(server, {"instances": [{"b64": _b64(astronaut_jpeg)}]}).json()["predictions"][0]["faces"]
    assert len(served) == len(faces) == 1
    local = faces[0].to_dict()
    assert served[0]["box"] == local["box"]
    for task, values in local["predictions"].items():
        assert served[0]["predictions"][task]["probabilities"] == pytest.approx(values["probabilities"], abs=1e-6)


# --- bad input: 4xx with a one-line reason, server stays up ---

TRUNCATED = "truncated"


@pytest.mark.parametrize(
    ("protocol", "body", "content_type", "status", "reason"),
    [
        ("v1", b"", "application/json", 400, "Unrecognized request format"),
        ("v1", b"", "image/jpeg", 400, "request body is empty"),
        ("v1", b"{", "application/json", 400, "Unrecognized request format"),
        ("v1", b'{"images": []}', "application/json", 400, 'expected JSON {"instances"'),
        ("v1", b'{"instances": []}', "application/json", 400, "'instances' is empty"),
        ("v1", b'{"instances": [{"b64": "!!"}]}', "application/json", 400, "instances[0].b64 is not valid base64"),
        ("v1", b'{"instances": [{"b64": "aGVsbG8="}]}', "application/json", 400, "not a recognised image format"),
        ("v1", b'{"instances": [{"url": "x"}]}', "application/json", 400, "instances[0] must be"),
        ("v1", b'{"instances": [[1, 2], [3]]}', "application/json", 400, "instances[0] must be 50x50"),
        ("v1", b"not an image", "image/png", 400, "not a recognised image format"),
        ("v1", TRUNCATED, "image/jpeg", 400, "truncated"),
        ("v2", b"", "application/json", 400, "body is empty"),
        ("v2", b"{", "application/json", 400, "not valid JSON"),
        ("v2", b'{"inputs": 3}', "application/json", 400, "inputs: Input should be a valid list"),
        ("v2", b'{"inputs": []}', "application/json", 400, "got 0 inputs"),
        (
            "v2",
            b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}',
            "application/json",
            400,
            "input 'x' has datatype FP32",
        ),
        (
            "v2",
            b'{"inputs": [{"name": "faces", "shape": [1, 50, 50], "datatype": "UINT8", "data": [1, 2, 3]}]}',
            "application/json",
            400,
            "data does not match shape",
        ),
        (
            "v2",
            b'{"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]}',
            "application/json",
            400,
            "shape says 2 images but data holds 1",
        ),
    ],
)
def test_bad_input_is_a_4xx_with_a_reason(
    server: Server, astronaut_jpeg: bytes, protocol: str, body: Any, content_type: str, status: int, reason: str
) -> None:
    if body is TRUNCATED:
        body = astronaut_jpeg[: len(astronaut_jpeg) // 3]
    path = f"/v1/models/{NAME}:predict" if protocol == "v1" else f"/v2/models/{NAME}/infer"
    r = requests.post(server.url + path, data=body, headers={"content-type": content_type}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert reason in error
    assert "\n" not in error and len(error) < 400


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_unknown_model_is_404(server: Server, astronaut_jpeg: bytes, protocol: str) -> None:
    if protocol == "v1":
        r = _v1(server, {"instances": [{"b64": _b64(astronaut_jpeg)}]}, name="nope")
    else:
        r = _v2(server, _v2_images(astronaut_jpeg), name="nope")
    assert r.status_code == 404
    assert "nope" in r.json()["error"]


def test_decompression_bomb_is_refused_from_its_header(server: Server) -> None:
    bomb = _png_bomb()
    assert len(bomb) < 200
    for r in (_v1(server, {"instances": [{"b64": _b64(bomb)}]}), _v2(server, _v2_images(bomb))):
        assert r.status_code == 400
        assert "too many pixels" in r.json()["error"]


def test_image_over_the_pixel_limit(server: Server) -> None:
    big = _jpeg(np.zeros((2100, 2000, 3), np.uint8), quality=10)  # 4.2 MP > 4 MP, yet a small file
    r = _v1(server, {"instances": [{"b64": _b64(big)}]})
    assert r.status_code == 400
    assert "more than max_pixels=4,000,000" in r.json()["error"]


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_too_many_images(server: Server, blank_png: bytes, protocol: str) -> None:
    images = [blank_png] * (MAX_IMAGES + 1)
    if protocol == "v1":
        r = _v1(server, {"instances": [{"b64": _b64(i)} for i in images]})
    else:
        r = _v2(server, _v2_images(*images))
    assert r.status_code == 400
    assert f"holds {MAX_IMAGES + 1} images, more than the limit of {MAX_IMAGES}" in r.json()["error"]


def test_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    # Declare 64 MB, send 64 KB, and read: the 413 must come without the server waiting for the rest.
    declared = 64 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        sock.sendall(b"x" * 65536)
        answer = b""
        while b"}" not in answer:  # the JSON body may arrive in a second segment
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 413"), text
    assert "more than the limit of 2,097,152 bytes" in text


@pytest.mark.parametrize("chunked", [False, True])
def test_body_over_the_limit_with_a_real_client(server: Server, chunked: bool) -> None:
    payload = b"x" * (MAX_BODY_MB * 1024 * 1024 + 1)
    # A generator body makes requests send it chunked (no Content-Length): counted as it streams.
    data = (payload[i : i + 65536] for i in range(0, len(payload), 65536)) if chunked else payload
    r = requests.post(
        f"{server.url}/v2/models/{NAME}/infer", data=data, headers={"content-type": "application/json"}, timeout=60
    )
    assert r.status_code == 413
    assert "more than the limit" in r.json()["error"]


# --- health, metrics, binding, memory ---


def test_health_and_readiness(server: Server) -> None:
    assert requests.get(f"{server.url}/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(f"{server.url}/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(f"{server.url}/v2/models/{NAME}/ready", timeout=5).json() == {"name": NAME, "ready": True}
    assert requests.get(f"{server.url}/v1/models/{NAME}", timeout=5).json() == {"name": NAME, "ready": True}
    assert requests.get(f"{server.url}/v2/models/nope/ready", timeout=5).status_code == 404


def test_model_metadata_lists_inputs_and_outputs(server: Server, model_tasks: dict[str, list[str]]) -> None:
    meta = requests.get(f"{server.url}/v2/models/{NAME}", timeout=5).json()
    assert meta["name"] == NAME
    assert {(i["name"], i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {
        ("image", "BYTES", (-1,)),
        ("face", "UINT8", (-1, SIZE, SIZE, 1)),
    }
    outputs = {o["name"]: o for o in meta["outputs"]}
    assert set(outputs) == {"faces", "image_index", "box", *model_tasks}
    for task, classes in model_tasks.items():
        assert outputs[task]["datatype"] == "FP32"
        assert outputs[task]["shape"] == [-1, len(classes)]


def test_kserve_host_hook_still_exists() -> None:
    """The one non-public kserve hook (server._bind_rest_server_to): fails loudly when kserve moves it."""
    from importlib.metadata import version

    import uvicorn
    from packaging.specifiers import SpecifierSet

    from fer_model.serving import server as fer_server

    assert version("kserve") in SpecifierSet(fer_server.TESTED_KSERVE), (
        f"kserve {version('kserve')} is not a tested version ({fer_server.TESTED_KSERVE}): re-check "
        "fer_model/serving/server.py::_bind_rest_server_to, then widen TESTED_KSERVE and the pyproject pin"
    )
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    def build() -> Any:
        repository = ModelRepository()
        return RESTServer("kserve.model_server:app", DataPlane(model_registry=repository),
                          ModelRepositoryExtension(model_registry=repository), 0)

    original = RESTServer.__init__
    try:
        assert build().config.host == "0.0.0.0"  # what kserve does on its own
        fer_server._bind_rest_server_to("127.0.0.1")
        rest = build()
        assert isinstance(rest.config, uvicorn.Config)
        assert rest.config.host == "127.0.0.1"
    finally:
        RESTServer.__init__ = original


def _metric(text: str, name: str, labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_requests_and_rejections(server: Server, astronaut_jpeg: bytes) -> None:
    before = requests.get(f"{server.url}/metrics", timeout=5).text
    _v1(server, {"instances": [{"b64": _b64(astronaut_jpeg)}]})
    _v1(server, {"instances": [{"b64": "!!"}]})
    after = requests.get(f"{server.url}/metrics", timeout=5).text
    label = f'model_name="{NAME}"'
    assert (
        _metric(after, "request_predict_seconds_count", label)
        == _metric(before, "request_predict_seconds_count", label) + 1
    )
    assert _metric(after, "fer_faces_total", label) == _metric(before, "fer_faces_total", label) + 1
    rejected = 'reason="invalid_input"'
    assert (
        _metric(after, "fer_rejected_requests_total", rejected)
        == _metric(before, "fer_rejected_requests_total", rejected) + 1
    )


def _listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = LISTEN
                address, port = local.split(":")
                if table == "tcp":
                    address = socket.inet_ntoa(struct.pack("<I", int(address, 16)))
                found.add((address, int(port, 16)))
    return found


def test_binds_loopback_only_and_no_grpc(server: Server) -> None:
    assert _listening(server.process.pid) == {("127.0.0.1", server.port)}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_memory_stays_bounded_under_bad_requests(server: Server, astronaut_jpeg: bytes) -> None:
    bomb, truncated = _png_bomb(), astronaut_jpeg[: len(astronaut_jpeg) // 2]
    big = b"x" * (MAX_BODY_MB * 1024 * 1024 + 1)

    def burst() -> None:
        for _ in range(10):
            _v1(server, {"instances": [{"b64": _b64(bomb)}] * MAX_IMAGES})
            _v2(server, _v2_images(truncated))
            requests.post(f"{server.url}/v1/models/{NAME}:predict", data=big, timeout=60)
            _v1(server, {"instances": [{"b64": "!!"}]})

    burst()  # first burst: allocator pools and caches reach their working size
    before = _rss_mb(server.process.pid)
    burst()
    burst()
    after = _rss_mb(server.process.pid)
    assert after - before < 32, f"RSS grew from {before:.0f} MB to {after:.0f} MB over 80 bad requests"
    assert server.process.poll() is None
    assert _v1(server, {"instances": [{"b64": _b64(astronaut_jpeg)}]}).status_code == 200


@pytest.mark.slow
def test_worker_processes_serve_with_the_same_limits(
    tiny_model_dir: Path, tmp_path: Path, astronaut_jpeg: bytes
) -> None:
    # Two workers, each loading its own model copy after start-up; the parent only supervises.
    with _running_server(tiny_model_dir, tmp_path / "workers.log", "--workers", "2", "--max-body-mb", "1") as multi:
        children = Path(f"/proc/{multi.process.pid}/task/{multi.process.pid}/children").read_text().split()
        workers = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) == 2
        for _ in range(4):
            r = _v1(multi, {"instances": [{"b64": _b64(astronaut_jpeg)}]})
            assert r.status_code == 200 and len(r.json()["predictions"][0]["faces"]) == 1
        big = requests.post(f"{multi.url}/v1/models/{NAME}:predict", data=b"x" * (1024 * 1024 + 1), timeout=60)
        assert big.status_code == 413  # the workers run our server, limits included
        for pid in [multi.process.pid, *map(int, workers)]:
            assert _listening(pid) <= {("127.0.0.1", multi.port)}
        assert "died" not in multi.log.read_text()  # no worker was killed for loading slowly


# --- the TF Serving path: the SavedModel signature docs/serving.md documents ---


def test_saved_model_signature_is_the_documented_one(tiny_model_dir: Path, model_tasks: dict[str, list[str]]) -> None:
    import tensorflow as tf

    from fer_model.predict import Predictor

    loaded = tf.saved_model.load(str(tiny_model_dir / "saved_model" / "1"))
    signature = loaded.signatures["serving_default"]
    _, inputs = signature.structured_input_signature
    assert list(inputs) == ["image"]
    assert inputs["image"].dtype == tf.uint8 and inputs["image"].shape.as_list() == [None, SIZE, SIZE, 1]
    faces = np.random.default_rng(1).integers(0, 256, size=(2, SIZE, SIZE, 1), dtype=np.uint8)
    outputs = signature(image=tf.constant(faces))
    assert set(outputs) == set(model_tasks)
    local = Predictor(tiny_model_dir).predict_aligned(faces)
    for task, classes in model_tasks.items():
        probs = outputs[task].numpy()
        assert probs.shape == (2, len(classes)) and probs.dtype == np.float32
        expected = [[face.probabilities[task][c] for c in classes] for face in local]
        np.testing.assert_allclose(probs, expected, atol=1e-5)


# --- request parsing alone (no server) ---


def test_parsed_request_is_validated() -> None:
    from fer_model.serving.protocol import ParsedRequest

    with pytest.raises(ValueError, match="exactly one"):
        ParsedRequest(protocol="v1")
    with pytest.raises(ValueError, match="protocol"):
        ParsedRequest(protocol="v3", images=(b"x",))
    assert ParsedRequest(protocol="v1", faces=np.zeros((2, SIZE, SIZE), np.uint8)).count == 2


def test_limits_are_validated() -> None:
    from fer_model.errors import ConfigError
    from fer_model.serving.limits import RequestLimits

    with pytest.raises(ConfigError, match="max_images"):
        RequestLimits(max_images=0)
    with pytest.raises(ConfigError, match="max_body_bytes"):
        RequestLimits(max_body_bytes=1.5)  # type: ignore[arg-type]


def test_v2_pixels_out_of_range_are_refused() -> None:
    from kserve import InferInput, InferRequest

    from fer_model.errors import InvalidInput
    from fer_model.serving.limits import RequestLimits
    from fer_model.serving.protocol import parse_v2

    tensor = InferInput(name="faces", shape=[1, SIZE, SIZE], datatype="INT32", data=[300] * SIZE * SIZE)
    with pytest.raises(InvalidInput, match="datatype INT32"):
        parse_v2(InferRequest(model_name=NAME, infer_inputs=[tensor]), limits=RequestLimits(), size=SIZE)
    from fer_model.serving.protocol import parse_v1

    with pytest.raises(InvalidInput, match="outside 0..255"):
        parse_v1({"instances": [[[300] * SIZE] * SIZE]}, limits=RequestLimits(), size=SIZE)
