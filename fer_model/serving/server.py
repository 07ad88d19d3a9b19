"""The KServe predictor: a `kserve.Model` over the model artifact, served by `kserve.ModelServer`.

Lifecycle (kserve.Model): `load()` builds the Predictor once and warms it up, then sets `ready`;
`preprocess` validates the request (V1 dict / raw image bytes, or V2 InferRequest) into a
ParsedRequest; `predict` decodes, detects, aligns and classifies every face of the request in one
model batch, in a single inference thread so the event loop keeps answering health checks and
refusing bad requests meanwhile; `postprocess` shapes the V1 or V2 answer (a V2 answer always
carries an id: kserve's `/infer` fails with 500 without one). `GET /v2/models/NAME` lists the
Open Inference Protocol inputs and outputs (protocol.v2_metadata).

Serving uses kserve's public API: `ModelServer(...).start([model])`, and our additions go on the
FastAPI app kserve serves (`kserve.model_server.app`) before it starts: a body over the size limit
is 413 before it is read (limits.BodyLimitMiddleware); a prediction request beyond
`max_pending_requests` admitted at once is 503 with Retry-After (limits.AdmissionLimitMiddleware);
a V2 binary-extension body is refused with the workaround (kserve 0.21 decodes its BYTES as
UTF-8, so raw images cannot pass); bad input is a one-line 400 (`{"error": ...}`); FastAPI's
multi-line 422 for malformed V2 JSON becomes the same one-line 400; the try-it page is at `GET /`
when asked for. With `--workers N` kserve's worker processes receive the model by pickling:
unpickling puts the same additions on the worker's app, and the worker loads the model at its
ASGI start-up.

Networking: gRPC starts only when a gRPC port is passed. kserve's REST server always binds 0.0.0.0;
`_bind_rest_server_to` is the one non-public hook, so a local server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_model.serving._kserve import import_kserve

import_kserve()

import kserve  # noqa: E402
import kserve.model_server  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from kserve.errors import InvalidInput as KServeInvalidInput  # noqa: E402
from prometheus_client import Counter  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from fer_model.errors import ConfigError, DataError, InvalidInput  # noqa: E402
from fer_model.serving.limits import AdmissionLimitMiddleware, BodyLimitMiddleware, RequestLimits  # noqa: E402
from fer_model.serving.protocol import (  # noqa: E402
    ParsedRequest,
    parse_v1,
    parse_v2,
    v1_response,
    v2_metadata,
    v2_response,
)

logger = logging.getLogger(__name__)

# kserve versions this module was tested against (pyproject pins the same range).
TESTED_KSERVE = ">=0.21,<0.22"

# Our own Prometheus series, next to kserve's request_*_seconds histograms on /metrics.
IMAGES = Counter("fer_images_total", "Images (or aligned faces) received in valid requests", ["model_name"])
FACES = Counter("fer_faces_total", "Faces classified", ["model_name"])
REJECTED = Counter("fer_rejected_requests_total", "Requests refused with a 4xx", ["reason"])
OVERLOADED = Counter(
    "fer_overloaded_requests_total", "Prediction requests refused with 503: max_pending_requests already admitted"
)

BINARY_UNSUPPORTED = "binary BYTES inputs are not supported for images; send them base64-encoded in JSON"


class RequestRefused(KServeInvalidInput):
    """A client's mistake found by our checks: a one-line 400 (kserve logs its own 400s with a traceback)."""


@dataclass(frozen=True)
class AppSettings:
    """What we add to kserve's app; travels with the model into worker processes."""

    max_body_bytes: int
    max_pending_requests: int
    page: bool


class FerModel(kserve.Model):
    """The fer-mtl predictor over one model artifact folder.

    Args:
        name: Model name in request paths (`/v1/models/NAME:predict`, `/v2/models/NAME/infer`).
        model_dir: The model artifact folder (in a pod: /mnt/models, filled by KServe's storage initializer).
        limits: Request limits.
        detector: Face detector ("blazeface" or "haar"); None follows the model's config.json.
        app_settings: When set, unpickling this model (in a kserve worker process) extends that
            process's app with them; `serve()` sets it.
    """

    def __init__(
        self,
        *,
        name: str,
        model_dir: str | os.PathLike[str],
        limits: RequestLimits,
        detector: str | None = None,
        app_settings: AppSettings | None = None,
    ) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.limits = limits
        self.detector = detector
        self.app_settings = app_settings
        self._predictor: Any = None
        # One inference thread: the Predictor (OpenCV cascades, a Keras model) is used by one
        # caller at a time, and the event loop stays free for health checks and cheap rejections.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-infer")

    def load(self) -> bool:
        """Load the artifact once, run one warm-up batch (first-call tracing), and become ready."""
        import numpy as np

        from fer_model.predict import Predictor

        self._predictor = Predictor(self.model_dir, max_pixels=self.limits.max_pixels, detector=self.detector)
        size = self._predictor.input_size
        self._predictor.predict_aligned(np.zeros((1, size, size), dtype=np.uint8))
        self._predictor.predict([np.zeros((size * 2, size * 2), dtype=np.uint8)])
        self.ready = True
        logger.info("model %s ready: %s (tasks %s)", self.name, self.model_dir, ", ".join(self._predictor.tasks))
        return self.ready

    # Worker processes (--workers > 1) get the model by pickling: ship the settings only; the worker
    # loads it at its ASGI start-up (LoadAtStartup), not while unpickling, where it would not yet
    # answer kserve's liveness pings and be killed and respawned for being slow to load.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_predictor"] = None
        state["_executor"] = None
        state["ready"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-infer")
        if self.app_settings is not None:
            extend_app(kserve.model_server.app, settings=self.app_settings, models=[self])

    def get_input_types(self) -> list[dict[str, Any]]:
        return self._metadata()[0]

    def get_output_types(self) -> list[dict[str, Any]]:
        return self._metadata()[1]

    def _metadata(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self._predictor is None:  # not loaded yet: nothing to describe
            return [], []
        return v2_metadata(tasks=self._predictor.tasks, size=self._predictor.input_size)

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> ParsedRequest:
        size = self._predictor.input_size
        try:
            if isinstance(payload, kserve.InferRequest):
                parsed = parse_v2(payload, limits=self.limits, size=size)
            else:
                parsed = parse_v1(payload, limits=self.limits, size=size)
        except InvalidInput as e:
            raise RequestRefused(str(e)) from None
        IMAGES.labels(model_name=self.name).inc(parsed.count)
        return parsed

    async def predict(self, payload: ParsedRequest, headers: dict[str, str] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._infer, payload)
        except (InvalidInput, DataError) as e:
            raise RequestRefused(str(e)) from None
        FACES.labels(model_name=self.name).inc(sum(len(r) for r in results))
        if payload.protocol == "v2":
            return v2_response(results, parsed=payload, model_name=self.name, tasks=self._predictor.tasks)
        return v1_response(results)

    def _infer(self, request: ParsedRequest) -> list[list[Any]]:
        """Runs in the inference thread: all faces of the request in one model batch."""
        if request.faces is not None:
            return [[face] for face in self._predictor.predict_aligned(request.faces)]
        return self._predictor.predict(list(request.images), max_faces_per_image=self.limits.max_faces_per_image)


async def _validation_error(_request: Any, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a V2 body that does not fit the schema, as one line and a 400."""
    errors = exc.errors()
    # The V2 route accepts `InferenceRequest | bytes`; the "not bytes" half of each error is noise.
    errors = [e for e in errors if "bytes" not in e.get("loc", ())] or errors
    problems = []
    for error in errors[:3]:
        if error.get("type") == "json_invalid":
            problems.append(f"body is not valid JSON ({(error.get('ctx') or {}).get('error', 'decode error')})")
        elif error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):
            problems.append("body is empty")
        else:
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "InferenceRequest"))
            problems.append(f"{where or 'body'}: {error.get('msg')}")
    return _reject("request does not match the V2 inference request schema: " + "; ".join(problems))


async def _http_error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own 4xx (`{"detail": ...}`, e.g. a JSON body nested too deeply to parse) in our one-line shape."""
    reason = str(exc.detail)
    if reason == "There was an error parsing the body":  # FastAPI's words for any non-JSONDecodeError failure
        reason = "body could not be parsed as JSON (malformed, or nested too deeply); send the documented shape"
    response = _reject(reason, status=exc.status_code, label="http_error")
    response.headers.update(exc.headers or {})
    return response


async def _request_refused(_request: Any, exc: RequestRefused) -> JSONResponse:
    """A client's mistake is worth one line at INFO, not kserve's traceback at ERROR."""
    return _reject(str(exc))


def _reject(reason: str, *, status: int = 400, label: str = "invalid_input") -> JSONResponse:
    REJECTED.labels(reason=label).inc()
    logger.info("%d: %s", status, reason)
    return JSONResponse(status_code=status, content={"error": reason})


_BINARY_HEADER = b"inference-header-content-length"
_CLOUDEVENT_HEADER = b"ce-specversion"
CLOUDEVENTS_UNSUPPORTED = "binary CloudEvents (ce-* headers) are not supported; send the JSON body without them"


class RefuseBinaryExtension:
    """A V2 binary-extension body (`Inference-Header-Content-Length`) or a binary CloudEvent (`ce-*`
    headers) is a 400 naming the workaround.

    kserve 0.21 decodes binary BYTES inputs as UTF-8 and answers raw image bytes with a 500, and
    answers a binary CloudEvent with an empty body or a `ce-contenttype` with a 500 (fuzzing found
    both); the headers say what the body is before anything is read.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        names = {k.lower() for k, _ in scope["headers"]} if scope["type"] == "http" else set()
        if _BINARY_HEADER in names:
            await _reject(BINARY_UNSUPPORTED, label="binary_extension")(scope, receive, send)
            return
        if _CLOUDEVENT_HEADER in names:
            await _reject(CLOUDEVENTS_UNSUPPORTED, label="cloudevent")(scope, receive, send)
            return
        await self.app(scope, receive, send)


class LoadAtStartup:
    """Load models that arrived unloaded (a kserve worker process) when the ASGI app starts."""

    def __init__(self, app: Any, *, models: list[FerModel]) -> None:
        self.app = app
        self.models = models

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            for model in self.models:
                if not model.ready:
                    model.load()
        await self.app(scope, receive, send)


def _add_routes(app: Any, *, page: bool) -> None:
    """Our routes beside kserve's: the try-it page when asked for."""
    if page:
        from fer_model.serving.page import add_page_routes

        add_page_routes(app)


def extend_app(app: Any, *, settings: AppSettings, models: list[FerModel]) -> None:
    """Put our middleware, error handlers and routes on kserve's FastAPI `app` (once per process)."""
    if getattr(app.state, "fer_extended", False):
        return
    app.state.fer_extended = True
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RequestRefused, _request_refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(LoadAtStartup, models=models)
    app.add_middleware(RefuseBinaryExtension)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_reject=lambda reason: REJECTED.labels(reason=reason).inc(),
    )
    # Outermost: an overloaded server refuses before reading or checking anything.
    app.add_middleware(
        AdmissionLimitMiddleware,
        max_pending_requests=settings.max_pending_requests,
        on_reject=lambda _reason: OVERLOADED.inc(),
    )
    _add_routes(app, page=settings.page)


def _bind_rest_server_to(host: str) -> None:
    """The one non-public hook: the interface kserve's REST server binds.

    Checked against kserve 0.21.0 (TESTED_KSERVE): `kserve.protocol.rest.server.RESTServer.__init__`
    builds `self.config = uvicorn.Config(host="0.0.0.0", ...)` with no parameter for the host, and
    both the single-process and the multi-process (`--workers`) servers bind from that config.
    This wraps `__init__` to set `config.host` afterwards.
    tests/test_serving.py::test_kserve_host_hook_still_exists fails when kserve moves it.
    """
    from kserve.protocol.rest.server import RESTServer

    original = getattr(RESTServer.__init__, "__wrapped__", RESTServer.__init__)

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.config.host = host

    RESTServer.__init__ = __init__


def serve(
    *,
    model_dir: str | os.PathLike[str],
    name: str = "fer-mtl",
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    grpc_port: int | None = None,
    limits: RequestLimits | None = None,
    page: bool = True,
    detector: str | None = None,
) -> None:
    """Load the model and serve it until SIGTERM / SIGINT, which answer the requests already admitted, then return.

    Args:
        model_dir: The model artifact folder.
        name: Model name in request paths.
        host: Interface to bind: 127.0.0.1 (default, local use) or 0.0.0.0 (in a container).
        port: HTTP port.
        workers: HTTP worker processes; each loads its own copy of the model (~700 MB with TensorFlow).
        grpc_port: Start kserve's gRPC server on this port; None (default) starts none.
        limits: Request limits (RequestLimits() when None).
        page: Serve the try-it page at `GET /` (off in the InferenceService: a page on a production
            predictor is a choice, not a default).
        detector: Face detector ("blazeface" or "haar"); None follows the model's config.json.

    Raises:
        ConfigError: a bad port, worker count or name.
        ArtifactError: `model_dir` is not a loadable model artifact.
    """
    limits = limits or RequestLimits()
    for what, value in (("port", port), ("grpc_port", grpc_port)):
        if value is not None and not 1 <= value <= 65535:
            raise ConfigError(f"`{what}` must be in 1..65535, got {value}")
    if grpc_port is not None and grpc_port == port:
        raise ConfigError(f"`grpc_port` must differ from the HTTP port, both are {port}")
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    if not name or "/" in name or ":" in name:
        raise ConfigError(f"`name` must be a non-empty model name without '/' or ':', got {name!r}")
    settings = AppSettings(
        max_body_bytes=limits.max_body_bytes, max_pending_requests=limits.max_pending_requests, page=page
    )
    model = FerModel(name=name, model_dir=model_dir, limits=limits, detector=detector, app_settings=settings)
    model.load()
    extend_app(kserve.model_server.app, settings=settings, models=[model])
    _bind_rest_server_to(host)
    server = kserve.ModelServer(
        http_port=port,
        grpc_port=grpc_port or 8081,
        enable_grpc=grpc_port is not None,
        workers=workers,
        # Per-request latency lines at INFO would drown the log at load; /metrics has the histograms.
        enable_latency_logging=False,
    )
    logger.info("serving %s on http://%s:%d (gRPC %s, page %s)", name, host, port, grpc_port or "off",
                "on" if page else "off")
    server.start([model])
