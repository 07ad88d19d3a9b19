"""Request parsing and response shaping for the V1 and V2 (Open Inference) protocols.

Requests carry either encoded images (JPEG, PNG, ...) or pre-aligned uint8 faces; never both.
Every check raises `InvalidInput` with a one-line reason naming the offending field. Decoding the
images themselves happens later, in the inference thread (see server.py). docs/serving.md shows
every shape with examples.

V1  `{"instances": [{"b64": "<base64 image>"}, ...]}` or `{"instances": [<SxS uint8 nested list>, ...]}`,
    or a raw image body with an image content type -> `{"predictions": [{"faces": [face, ...]}, ...]}`.
V2  one input: BYTES [N] of encoded images (base64 strings in JSON, raw in the binary extension),
    or UINT8 [N, S, S] / [N, S, S, 1] of aligned faces -> outputs (F = faces in the request):
    `faces` BYTES [N] (per image, JSON `{"faces": [...]}`), `image_index` INT32 [F], `box` INT32 [F, 4]
    (-1 where there was no detection), and one FP32 [F, C] probability tensor per task.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_model.errors import InvalidInput
from fer_model.serving.limits import RequestLimits

if TYPE_CHECKING:
    from kserve import InferRequest, InferResponse

    from fer_model.predict import FacePrediction

logger = logging.getLogger(__name__)

V1_EXAMPLE = '{"instances": [{"b64": "<base64 JPEG/PNG>"}]}'
V2_EXAMPLE = "one input: BYTES [N] of base64 images, or UINT8 [N, {s}, {s}] aligned faces"


@dataclass(frozen=True)
class ParsedRequest:
    """A validated request: encoded images or aligned faces, and what the response needs.

    Attributes:
        protocol: "v1" or "v2".
        images: Encoded image files, when the request carries images.
        faces: uint8 [N, S, S] aligned faces, when the request carries those.
        request_id: The V2 request id, echoed in the response (a new uuid4 when absent).
        source: The V2 InferRequest (its requested outputs shape the response); None for V1.
    """

    protocol: str
    images: tuple[bytes, ...] | None = None
    faces: np.ndarray | None = None
    request_id: str | None = None
    source: Any = None

    def __post_init__(self) -> None:
        if self.protocol not in ("v1", "v2"):
            raise ValueError(f"`protocol` must be 'v1' or 'v2', got {self.protocol!r}")
        if (self.images is None) == (self.faces is None):
            raise ValueError("a ParsedRequest carries either `images` or `faces`, exactly one")
        if self.faces is not None and (self.faces.dtype != np.uint8 or self.faces.ndim != 3):
            raise ValueError(f"`faces` must be uint8 [N, S, S], got {self.faces.dtype} {self.faces.shape}")

    @property
    def count(self) -> int:
        """Number of images (or aligned faces) in the request."""
        return len(self.images) if self.images is not None else int(self.faces.shape[0])


def _check_count(n: int, *, limits: RequestLimits, what: str) -> None:
    if n == 0:
        raise InvalidInput(f"{what} is empty: send at least one image")
    if n > limits.max_images:
        raise InvalidInput(f"{what} holds {n} images, more than the limit of {limits.max_images} per request")


def _b64(text: Any, *, where: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{where} must be a base64 string, got {type(text).__name__}")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where} is not valid base64: {e}") from None
    if not data:
        raise InvalidInput(f"{where} is empty: no image bytes")
    return data


def _aligned(values: Any, *, where: str, size: int) -> np.ndarray:
    """One or more aligned faces from nested lists or an array; returns uint8 [..., S, S]."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"{where} is not a rectangular array of pixels: {e}") from None
    if array.dtype.kind not in "iu":
        raise InvalidInput(f"{where} must hold integer pixels 0..255, got {array.dtype} values")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise InvalidInput(f"{where} has pixels outside 0..255 (min {array.min()}, max {array.max()})")
    if array.ndim >= 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.shape[-2:] != (size, size):
        raise InvalidInput(f"{where} must be {size}x{size} (or {size}x{size}x1) aligned faces, got shape {array.shape}")
    return array.astype(np.uint8)


def parse_v1(payload: dict[str, Any] | bytes, *, limits: RequestLimits, size: int) -> ParsedRequest:
    """Validate a V1 request: a JSON dict, or a raw image body (a non-JSON content type)."""
    if isinstance(payload, bytes | bytearray):
        if not payload:
            raise InvalidInput(f"request body is empty; send an image, or JSON {V1_EXAMPLE}")
        return ParsedRequest(protocol="v1", images=(bytes(payload),))
    if not isinstance(payload, dict) or "instances" not in payload:
        got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise InvalidInput(f"expected JSON {V1_EXAMPLE}; got {got}")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f"'instances' must be a list, got {type(instances).__name__}")
    _check_count(len(instances), limits=limits, what="'instances'")
    if all(isinstance(i, dict) for i in instances):
        images = []
        for n, instance in enumerate(instances):
            if set(instance) != {"b64"}:
                raise InvalidInput(f'instances[{n}] must be {{"b64": "<base64 image>"}}, got keys {sorted(instance)}')
            images.append(_b64(instance["b64"], where=f"instances[{n}].b64"))
        return ParsedRequest(protocol="v1", images=tuple(images))
    if all(isinstance(i, list) for i in instances):
        faces = [_aligned(f, where=f"instances[{n}]", size=size) for n, f in enumerate(instances)]
        for n, face in enumerate(faces):
            if face.ndim != 2:  # checked one by one: np.stack of mixed shapes would be a ValueError (a 500)
                raise InvalidInput(f"instances[{n}] must be one {size}x{size} face, got shape {face.shape}")
        return ParsedRequest(protocol="v1", faces=np.stack(faces))
    kinds = sorted({type(i).__name__ for i in instances})
    raise InvalidInput(
        f'each instance must be {{"b64": ...}} (an image) or a {size}x{size} list (an aligned face), '
        f"all of one kind; got {kinds}"
    )


def parse_v2(request: InferRequest, *, limits: RequestLimits, size: int) -> ParsedRequest:
    """Validate a V2 InferRequest: one BYTES input of images or one UINT8 input of aligned faces."""
    inputs = list(request.inputs or [])
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise InvalidInput(f"expected {V2_EXAMPLE.format(s=size)}; got {len(inputs)} inputs {names}")
    (tensor,) = inputs
    where = f"input '{tensor.name}'"
    shape = [int(d) for d in (tensor.shape or [])]
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{where}: shape {shape} has a negative dimension; a request states every dimension")
    request_id = request.id or str(uuid.uuid4())
    if tensor.datatype == "BYTES":
        if len(shape) != 1:
            raise InvalidInput(f"{where}: BYTES images must have shape [N], got {shape}")
        _check_count(shape[0], limits=limits, what=where)
        if tensor._raw_data is not None:  # binary extension: the images' own bytes, no base64
            items = [bytes(x) for x in _as_numpy(tensor, where=where).ravel()]
            for n, item in enumerate(items):
                if not item:
                    raise InvalidInput(f"{where}[{n}] is empty: no image bytes")
        else:
            data = tensor.data if isinstance(tensor.data, list) else [tensor.data]
            flat = np.asarray(data, dtype=object).ravel().tolist()
            if len(flat) != shape[0]:
                raise InvalidInput(f"{where}: shape says {shape[0]} images but data holds {len(flat)}")
            items = [_b64(x, where=f"{where}[{n}]") for n, x in enumerate(flat)]
        return ParsedRequest(protocol="v2", images=tuple(items), request_id=request_id, source=request)
    if tensor.datatype == "UINT8":
        if len(shape) not in (3, 4):
            raise InvalidInput(f"{where}: UINT8 faces must have shape [N, {size}, {size}] or [N, {size}, {size}, 1]")
        _check_count(shape[0], limits=limits, what=where)
        faces = _aligned(_v2_pixels(tensor, shape=shape, where=where), where=where, size=size)
        return ParsedRequest(protocol="v2", faces=faces, request_id=request_id, source=request)
    raise InvalidInput(f"{where} has datatype {tensor.datatype}; expected {V2_EXAMPLE.format(s=size)}")


def _v2_pixels(tensor: Any, *, shape: list[int], where: str) -> np.ndarray:
    """The UINT8 tensor's values as they were sent: kserve's `as_numpy` casts JSON data to uint8,
    which would silently truncate 1.5 to 1 and take `true` for 1; `_aligned` refuses both."""
    if tensor._raw_data is not None or not isinstance(tensor.data, list):
        return _as_numpy(tensor, where=where)
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError) as e:
        raise InvalidInput(f"{where}: data is not a rectangular array of pixels: {e}") from None
    if values.size != math.prod(shape):
        raise InvalidInput(
            f"{where}: data does not match shape {shape}: it holds {values.size} values, "
            f"the shape needs {math.prod(shape)}"
        )
    return values.reshape(shape)


def _as_numpy(tensor: Any, *, where: str) -> np.ndarray:
    try:
        return tensor.as_numpy()
    except (ValueError, TypeError, OverflowError) as e:
        raise InvalidInput(f"{where}: data does not match shape {tensor.shape} and {tensor.datatype}: {e}") from None


def v1_response(results: Sequence[Sequence[FacePrediction]]) -> dict[str, Any]:
    """`{"predictions": [{"faces": [face.to_dict(), ...]}, ...]}`, one entry per image in order."""
    return {"predictions": [{"faces": [f.to_dict() for f in faces]} for faces in results]}


def v2_response(
    results: Sequence[Sequence[FacePrediction]],
    *,
    parsed: ParsedRequest,
    model_name: str,
    tasks: dict[str, tuple[str, ...]],
) -> InferResponse:
    """The V2 response: per-image JSON plus per-face tensors (see the module docstring); always has an id."""
    from kserve import InferOutput, InferResponse

    flat = [(i, f) for i, faces in enumerate(results) for f in faces]
    boxes = np.array([f.box if f.box is not None else (-1, -1, -1, -1) for _, f in flat], dtype=np.int32)
    outputs = [
        InferOutput(
            name="faces",
            shape=[len(results)],
            datatype="BYTES",
            data=[json.dumps({"faces": [f.to_dict() for f in faces]}) for faces in results],
        ),
        InferOutput(name="image_index", shape=[len(flat)], datatype="INT32", data=[i for i, _ in flat]),
        InferOutput(name="box", shape=[len(flat), 4], datatype="INT32", data=boxes.reshape(-1).tolist()),
    ]
    for task, classes in tasks.items():
        probs = [[f.probabilities[task][c] for c in classes] for _, f in flat]
        outputs.append(
            InferOutput(
                name=task,
                shape=[len(flat), len(classes)],
                datatype="FP32",
                data=np.asarray(probs, dtype=np.float32).reshape(-1).tolist(),
                parameters={"classes": ",".join(classes)},
            )
        )
    source = parsed.source
    return InferResponse(
        response_id=parsed.request_id or str(uuid.uuid4()),
        model_name=model_name,
        infer_outputs=outputs,
        use_binary_outputs=bool(source is not None and source.use_binary_outputs),
        requested_outputs=getattr(source, "request_outputs", None),
    )


def v2_metadata(*, tasks: dict[str, tuple[str, ...]], size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open Inference Protocol tensor metadata: `(inputs, outputs)` for `GET /v2/models/NAME`.

    A request carries exactly one of the two inputs (any name is accepted; these are the
    documented ones); -1 is a variable dimension (images, faces in the request).
    """
    inputs = [
        {"name": "image", "datatype": "BYTES", "shape": [-1]},
        {"name": "face", "datatype": "UINT8", "shape": [-1, size, size, 1]},
    ]
    outputs = [
        {"name": "faces", "datatype": "BYTES", "shape": [-1]},
        {"name": "image_index", "datatype": "INT32", "shape": [-1]},
        {"name": "box", "datatype": "INT32", "shape": [-1, 4]},
    ]
    outputs += [{"name": task, "datatype": "FP32", "shape": [-1, len(classes)]} for task, classes in tasks.items()]
    return inputs, outputs
