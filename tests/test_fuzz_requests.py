"""Hostile requests to the predictor (hypothesis): every input is answered or refused with a reason.

Two layers. The parse and decode layer (`images.decode_image`, face detection, `protocol.parse_v1`,
`protocol.parse_v2`) runs hundreds of examples: random bytes, mutated JPEG/PNG/WebP/GIF/BMP/TIFF,
header-only bombs, wrong JSON types in every field, NaN/inf and wrong shapes in V2 tensors. The
HTTP layer runs the whole app (kserve's FastAPI app with our middleware and handlers, the shipped
pretrained model) in process, fewer examples. The promise checked: a valid answer, or a 4xx whose
`error` is one line naming the reason; never a 5xx, never an uncaught exception, never a hang
(each example runs under `_hostile.bounded`).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fer_model.errors import DataError, InvalidInput
from fer_model.serving.limits import RequestLimits
from tests._hostile import (
    JSON_VALUES,
    bmp_with_size,
    bounded,
    deeply_nested,
    encoded,
    fuzz_settings,
    hostile_images,
    jpeg_with_size,
    png_with_size,
)

SIZE = 50
LIMITS = RequestLimits(max_body_bytes=2 * 1024 * 1024, max_images=4, max_pixels=1_000_000)
NAME = "fer-mtl"
V1 = f"/v1/models/{NAME}:predict"
V2 = f"/v2/models/{NAME}/infer"
JSON = "application/json"


def _one_line_reason(error: BaseException | str) -> None:
    text = str(error)
    assert text.strip(), "a refusal must say why"
    assert "\n" not in text, f"a refusal is one line: {text!r}"


# --- strategies -------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: What a "b64" field or a V2 BYTES element may hold: base64 of hostile images, base64 garbage,
#: and values of any other JSON type.
B64_VALUES = st.one_of(
    hostile_images().map(_b64),
    st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=\n -_", max_size=40),
    JSON_VALUES,
)

#: Shapes near the aligned-face shape, and any other small shape.
FACE_SHAPES = st.one_of(
    st.sampled_from([(SIZE, SIZE), (SIZE, SIZE, 1), (2, SIZE, SIZE), (SIZE - 1, SIZE), (SIZE, SIZE, 3), (SIZE,), ()]),
    st.lists(st.integers(0, 4), max_size=4).map(tuple),
)


NEAR_FACE_SHAPES = st.sampled_from([(SIZE, SIZE), (SIZE, SIZE, 1), (1, SIZE, SIZE), (2, SIZE, SIZE), (SIZE, SIZE, 2)])


def _zeros(shape: tuple[int, ...]) -> list[Any]:
    return np.zeros(shape, np.uint8).tolist()


@st.composite
def pixel_arrays(draw: st.DrawFn, shape: tuple[int, ...]) -> list[Any]:
    """A nested list of `shape`: one fill value with a few others put in (ints, floats, NaN, bools)."""
    special = st.one_of(st.integers(-300, 600), st.floats(allow_nan=True, allow_infinity=True), st.booleans())
    fill = draw(st.one_of(st.integers(0, 255), special))
    n = math.prod(shape)
    flat = [fill] * n
    for _ in range(draw(st.integers(0, 3)) if n else 0):
        flat[draw(st.integers(0, n - 1))] = draw(special)
    return np.array(flat, dtype=object).reshape(shape).tolist() if shape else fill


V1_JSON_PAYLOADS = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries({"instances": JSON_VALUES}),
    st.fixed_dictionaries({"instances": st.lists(st.fixed_dictionaries({"b64": B64_VALUES}), max_size=6)}),
    st.fixed_dictionaries({"instances": st.lists(FACE_SHAPES.flatmap(pixel_arrays), max_size=3)}),
    st.fixed_dictionaries({"instances": st.lists(NEAR_FACE_SHAPES.map(_zeros), min_size=2, max_size=3)}),
    st.fixed_dictionaries({"instances": st.lists(st.one_of(JSON_VALUES, st.just({"b64": _b64(encoded("PNG"))})))}),
)
V1_PAYLOADS = st.one_of(V1_JSON_PAYLOADS, hostile_images())  # bytes: a raw image body

DATATYPES = st.sampled_from(["BYTES", "UINT8", "FP32", "INT32", "BOOL", "INT64", "FP16", "uint8", ""])


@st.composite
def v2_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """One V2 input tensor: well-shaped images or faces with hostile values, or anything at all."""
    n = draw(st.integers(0, 5))
    kind = draw(st.sampled_from(["images", "faces", "anything"]))
    if kind == "images":
        shape: Any = draw(st.sampled_from([[n], [n, 1], [-1], [n + 1]]))
        data: Any = draw(st.lists(B64_VALUES, min_size=n, max_size=n))
        datatype = draw(st.sampled_from(["BYTES", "BYTES", "UINT8"]))
    elif kind == "faces":
        shape = draw(st.sampled_from([[n, SIZE, SIZE], [n, SIZE, SIZE, 1], [-n, SIZE, SIZE], [n, SIZE - 1, SIZE]]))
        data = draw(pixel_arrays((abs(math.prod(shape)),)))
        datatype = draw(st.sampled_from(["UINT8", "UINT8", "INT32", "FP32"]))
    else:
        shape = draw(st.one_of(st.lists(st.integers(-(2**40), 2**40), max_size=5), JSON_VALUES))
        data = draw(JSON_VALUES)
        datatype = draw(st.one_of(DATATYPES, JSON_VALUES))
    tensor = {"name": draw(st.sampled_from(["image", "face", "x"])), "shape": shape, "datatype": datatype, "data": data}
    if draw(st.booleans()):
        tensor["parameters"] = draw(st.dictionaries(st.text(max_size=12), JSON_SCALARS_SMALL, max_size=2))
    return tensor


JSON_SCALARS_SMALL = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6))


@st.composite
def v2_payloads(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    body: dict[str, Any] = {"inputs": draw(st.lists(v2_tensors(), max_size=2))}
    if draw(st.booleans()):
        body["id"] = draw(st.one_of(st.text(max_size=12), JSON_SCALARS_SMALL))
    if draw(st.booleans()):
        names = st.sampled_from(["faces", "box", "image_index", "emotion", "nope", ""])
        body["outputs"] = draw(st.lists(st.fixed_dictionaries({"name": names}), max_size=3))
    if draw(st.booleans()):
        body["parameters"] = draw(st.dictionaries(st.text(max_size=20), JSON_SCALARS_SMALL, max_size=2))
    return body


# --- the parse and decode layer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def aligner() -> Any:
    from fer_model.alignment import FaceAligner

    return FaceAligner()


@fuzz_settings(max_examples=400)
@given(data=hostile_images())
def test_hostile_image_bytes_decode_and_detect_or_raise_data_error(data: bytes, aligner: Any) -> None:
    from fer_model.images import decode_image

    def decode_and_detect() -> np.ndarray:
        image = decode_image(data, max_pixels=LIMITS.max_pixels)
        faces = aligner.detect_and_align(image, max_faces=LIMITS.max_faces_per_image)
        assert all(f.face is None or f.face.shape == (SIZE, SIZE) for f in faces)
        return image

    try:
        image = bounded(decode_and_detect, what="decoding and detection")
    except DataError as e:
        _one_line_reason(e)
        return
    assert image.dtype == np.uint8
    assert image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    assert 0 < image.shape[0] * image.shape[1] <= LIMITS.max_pixels


@fuzz_settings(max_examples=150)
@given(
    make=st.sampled_from([png_with_size, bmp_with_size, jpeg_with_size]),
    width=st.integers(1, 65535),
    height=st.integers(1, 65535),
)
def test_a_declared_size_over_the_limit_is_refused_from_the_header(make: Any, width: int, height: int) -> None:
    from fer_model.images import decode_image

    limit = 100_000
    if width * height <= limit:
        return
    with pytest.raises(DataError, match="pixels") as refused:
        bounded(lambda: decode_image(make(width, height), max_pixels=limit), what="a header-only bomb")
    _one_line_reason(refused.value)


def _check_parsed(parsed: Any) -> None:
    """What a ParsedRequest may carry once a parser accepted the request."""
    assert 1 <= parsed.count <= LIMITS.max_images
    if parsed.images is not None:
        assert all(isinstance(i, bytes) and i for i in parsed.images)
    else:
        assert parsed.faces.dtype == np.uint8 and parsed.faces.shape[1:] == (SIZE, SIZE)


@fuzz_settings(max_examples=500)
@given(payload=V1_PAYLOADS)
def test_v1_payloads_parse_or_raise_invalid_input(payload: Any) -> None:
    from fer_model.serving.protocol import parse_v1

    try:
        parsed = bounded(lambda: parse_v1(payload, limits=LIMITS, size=SIZE), what="parse_v1")
    except InvalidInput as e:
        _one_line_reason(e)
        return
    _check_parsed(parsed)


@fuzz_settings(max_examples=300)
@given(payload=v2_payloads())
def test_v2_requests_parse_or_raise_invalid_input(payload: Any) -> None:
    """As the server does: the schema check (pydantic, a 400 there), kserve's conversion, our parser."""
    import pydantic
    from kserve import InferRequest
    from kserve.errors import InvalidInput as KServeInvalidInput
    from kserve.protocol.rest.v2_datamodels import InferenceRequest

    from fer_model.serving.protocol import parse_v2

    try:
        body = InferenceRequest.model_validate(payload)
    except pydantic.ValidationError:
        return  # the server answers these with its schema 400 (tested over HTTP below)
    try:
        request = InferRequest.from_inference_request(body, NAME)
    except KServeInvalidInput as e:
        _one_line_reason(e)
        return
    try:
        parsed = bounded(lambda: parse_v2(request, limits=LIMITS, size=SIZE), what="parse_v2")
    except InvalidInput as e:
        _one_line_reason(e)
        return
    _check_parsed(parsed)
    assert parsed.request_id


# Each bug the fuzzing found, as a plain test.


def test_v1_faces_of_mixed_shapes_are_refused_naming_the_instance() -> None:
    from fer_model.serving.protocol import parse_v1

    face = [[0] * SIZE] * SIZE
    with pytest.raises(InvalidInput, match=r"instances\[1\] must be one 50x50 face, got shape \(2, 50, 50\)"):
        parse_v1({"instances": [face, [face, face]]}, limits=LIMITS, size=SIZE)


@pytest.mark.parametrize(
    ("shape", "data", "match"),
    [
        ([-1, SIZE, SIZE], [0] * 2 * SIZE * SIZE, "negative dimension"),
        ([1, SIZE, SIZE], [1.5] * SIZE * SIZE, "integer pixels 0..255, got float64"),
        ([1, SIZE, SIZE], [True] * SIZE * SIZE, "integer pixels 0..255, got bool"),
        ([1, SIZE, SIZE], [0] * (SIZE * SIZE - 1), "does not match shape .*holds 2499 values, the shape needs 2500"),
    ],
)
def test_v2_faces_that_are_not_what_they_claim_are_refused(shape: list[int], data: list[Any], match: str) -> None:
    from kserve import InferInput, InferRequest

    from fer_model.serving.protocol import parse_v2

    tensor = InferInput(name="face", shape=shape, datatype="UINT8", data=data)
    with pytest.raises(InvalidInput, match=match):
        parse_v2(InferRequest(model_name=NAME, infer_inputs=[tensor]), limits=LIMITS, size=SIZE)


def test_a_thin_strip_image_is_searched_for_faces_not_a_crash(aligner: Any) -> None:
    from fer_model.images import decode_image

    strip = decode_image(_png(np.zeros((1, 3000), np.uint8)))
    assert aligner.detect_and_align(strip) == []


def test_only_the_listed_formats_are_decoded() -> None:
    from PIL import Image

    from fer_model.images import decode_image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="PCX")  # Pillow reads it; we do not
    with pytest.raises(DataError, match="not a recognised image format.*send one of JPEG, PNG"):
        decode_image(buf.getvalue())


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# --- the HTTP layer: the whole app in process ---------------------------------------------------


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """kserve's app as `serve()` builds it (routes, kserve's handlers, our middleware and handlers)
    around the shipped pretrained model, behind starlette's in-process TestClient."""
    pytest.importorskip("httpx")  # starlette's TestClient
    import kserve.model_server
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    from fer_model.predict import resolve_model_dir
    from fer_model.serving.server import AppSettings, FerModel, extend_app

    # The app settings mirror the request limits of the same name (max_body_bytes, ...).
    limits = {f.name: getattr(LIMITS, f.name) for f in dataclasses.fields(AppSettings) if hasattr(LIMITS, f.name)}
    settings = AppSettings(**limits, page=False)
    model = FerModel(name=NAME, model_dir=resolve_model_dir(None), limits=LIMITS, app_settings=settings)
    model.load()
    repository = ModelRepository()
    repository.update(model)
    # RESTServer builds on the app kserve.model_server names; a fresh one keeps this module's
    # routes and handlers off the process-wide app.
    original, app = kserve.model_server.app, FastAPI()
    kserve.model_server.app = app
    try:
        RESTServer("kserve.model_server:app", DataPlane(model_registry=repository),
                   ModelRepositoryExtension(model_registry=repository), 0).create_application()
        extend_app(app, settings=settings, models=[model])
        with TestClient(app, raise_server_exceptions=False) as test_client:
            yield test_client
    finally:
        kserve.model_server.app = original


def _post(client: Any, path: str, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> Any:
    headers = {"content-type": content_type} if content_type else {}
    headers.update(extra or {})
    return bounded(lambda: client.post(path, content=body, headers=headers), what=f"POST {path}")


def _check_answer(response: Any, *, path: str) -> None:
    """200 with the documented shape, or a 4xx with a one-line `error`; never a 5xx."""
    assert response.status_code < 500, f"{response.status_code} from {path}: {response.text[:500]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error, str)
        _one_line_reason(error)
        return
    assert response.status_code == 200, response.text[:500]
    answer = response.json()
    if path == V1:
        assert all(isinstance(p["faces"], list) for p in answer["predictions"])
    else:
        assert answer["id"] and isinstance(answer["outputs"], list)


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN and Infinity as Python writes them: not JSON, a 400


HTTP_BODIES = st.one_of(
    st.tuples(st.just(V1), V1_JSON_PAYLOADS.map(_json), st.just(JSON)),
    st.tuples(st.just(V2), v2_payloads().map(_json), st.just(JSON)),
    st.tuples(
        st.sampled_from([V1, V2]),
        st.one_of(hostile_images(), st.binary(max_size=256), st.integers(1, 5000).map(deeply_nested)),
        st.sampled_from(["application/json", "image/jpeg", "application/octet-stream", "text/plain", ""]),
    ),
)


CLOUDEVENT = {"ce-specversion": "1.0", "ce-source": "fuzz", "ce-type": "t", "ce-id": "1"}
#: Headers that change how kserve reads a body: a binary CloudEvent, the V2 binary extension.
HEADERS = st.one_of(
    st.just({}),
    st.fixed_dictionaries({
        "ce-specversion": st.sampled_from(["1.0", "0.3", "9", ""]),
        "ce-source": st.just("fuzz"), "ce-type": st.just("t"), "ce-id": st.text("abc123", max_size=4),
    }),
    st.fixed_dictionaries({"inference-header-content-length": st.sampled_from(["0", "12", "-1", "x", "99999999999"])}),
)


@fuzz_settings(max_examples=250)
@given(request=HTTP_BODIES, headers=HEADERS)
def test_http_requests_are_answered_or_refused_with_a_reason(
    client: Any, request: tuple[str, bytes, str], headers: dict[str, str]
) -> None:
    path, body, content_type = request
    _check_answer(_post(client, path, body, content_type, headers), path=path)


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        (V2, deeply_nested(100_000), "nested too deeply"),
        (V1, deeply_nested(100_000), "depth limit exceeded"),
        (V1, _json({"instances": [[[0] * SIZE] * SIZE, [[[0] * SIZE] * SIZE] * 2]}), "instances[1] must be one 50x50"),
    ],
)
def test_http_refusals_found_by_fuzzing(client: Any, path: str, body: bytes, reason: str) -> None:
    response = _post(client, path, body, "application/json")
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"", CLOUDEVENT),
        (_json({"instances": [[[0] * SIZE] * SIZE]}), {**CLOUDEVENT, "ce-contenttype": "application/json"}),
    ],
)
def test_http_binary_cloudevents_are_refused_not_a_500(client: Any, body: bytes, headers: dict[str, str]) -> None:
    response = _post(client, V1, body, "application/json", headers)
    assert response.status_code == 400, response.text
    assert "CloudEvents (ce-* headers) are not supported" in response.json()["error"]


def test_http_thin_strip_image_is_an_answer_without_faces(client: Any) -> None:
    strip = _png(np.zeros((1, 3000), np.uint8))
    response = _post(client, V1, _json({"instances": [{"b64": _b64(strip)}]}), "application/json")
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [{"faces": []}]
