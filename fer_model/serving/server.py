"""The KServe predictor: a `kserve.Model` over the model artifact, and the server that hosts it.

Lifecycle (kserve.Model): `load()` builds the Predictor once and warms it up, then sets `ready`;
`preprocess` validates the request (V1 dict / raw image bytes, or V2 InferRequest) into a
ParsedRequest; `predict` decodes, detects, aligns and classifies every face of the request in one
model batch, in a single inference thread so the event loop keeps answering health checks and
refusing bad requests meanwhile; `postprocess` shapes the V1 or V2 answer (a V2 answer always
carries an id: kserve's `/infer` fails with 500 without one).

Bad input is `kserve.errors.InvalidInput` (400, `{"error": "<one line>"}`); a body over the size
limit is 413 before it is read (limits.BodyLimitMiddleware); an unknown model name is kserve's 404.
FastAPI's multi-line 422 for malformed V2 JSON is turned into the same one-line 400.

Networking: kserve's RESTServer binds 0.0.0.0 unconditionally and ModelServer starts gRPC on 8081
unless told otherwise. `serve()` binds the host it is given (127.0.0.1 unless the container asks
for 0.0.0.0) and starts gRPC only when a gRPC port is passed.

The try-it page (fer_model/serving/page) is served at `GET /` when `page=True`; `_add_routes` is the
one place that puts it on the app.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fer_model.serving._kserve import import_kserve

import_kserve()

import kserve  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING  # noqa: E402
from kserve.errors import InferenceError  # noqa: E402
from kserve.errors import InvalidInput as KServeInvalidInput  # noqa: E402
from kserve.protocol.rest.multiprocess.server import RESTServerMultiProcess  # noqa: E402
from kserve.protocol.rest.server import RESTServer  # noqa: E402
from prometheus_client import Counter  # noqa: E402

from fer_model.errors import ConfigError, DataError, InvalidInput  # noqa: E402
from fer_model.serving.limits import BodyLimitMiddleware, RequestLimits  # noqa: E402
from fer_model.serving.protocol import ParsedRequest, parse_v1, parse_v2, v1_response, v2_response  # noqa: E402

logger = logging.getLogger(__name__)

# Our own Prometheus series, next to kserve's request_*_seconds histograms on /metrics.
IMAGES = Counter("fer_images_total", "Images (or aligned faces) received in valid requests", ["model_name"])
FACES = Counter("fer_faces_total", "Faces classified", ["model_name"])
REJECTED = Counter("fer_rejected_requests_total", "Requests refused with a 4xx", ["reason"])


class FerModel(kserve.Model):
    """The fer-mtl predictor over one model artifact folder.

    Args:
        name: Model name in request paths (`/v1/models/NAME:predict`, `/v2/models/NAME/infer`).
        model_dir: The model artifact folder (in a pod: /mnt/models, filled by KServe's storage initializer).
        limits: Request limits.
    """

    def __init__(self, *, name: str, model_dir: str | os.PathLike[str], limits: RequestLimits) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.limits = limits
        self._predictor: Any = None
        # One inference thread: the Predictor (OpenCV cascades, a Keras model) is used by one
        # caller at a time, and the event loop stays free for health checks and cheap rejections.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-infer")

    def load(self) -> bool:
        """Load the artifact once, run one warm-up batch (first-call tracing), and become ready."""
        import numpy as np

        from fer_model.predict import Predictor

        self._predictor = Predictor(self.model_dir, max_pixels=self.limits.max_pixels)
        size = self._predictor.input_size
        self._predictor.predict_aligned(np.zeros((1, size, size), dtype=np.uint8))
        self._predictor.predict([np.zeros((size * 2, size * 2), dtype=np.uint8)])
        self.ready = True
        logger.info("model %s ready: %s (tasks %s)", self.name, self.model_dir, ", ".join(self._predictor.tasks))
        return self.ready

    # Worker processes (--workers > 1) get the model by pickling: ship the settings only; the worker
    # loads it once it runs (_RESTServer.run), not while unpickling, where it would not yet answer
    # kserve's liveness pings and be killed and respawned for being slow to load.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_predictor"] = None
        state["_executor"] = None
        state["ready"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fer-infer")

    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> ParsedRequest:
        size = self._predictor.input_size
        try:
            if isinstance(payload, kserve.InferRequest):
                parsed = parse_v2(payload, limits=self.limits, size=size)
            else:
                parsed = parse_v1(payload, limits=self.limits, size=size)
        except InvalidInput as e:
            raise KServeInvalidInput(str(e)) from None
        IMAGES.labels(model_name=self.name).inc(parsed.count)
        return parsed

    async def predict(self, payload: ParsedRequest, headers: dict[str, str] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._infer, payload)
        except (InvalidInput, DataError) as e:
            raise KServeInvalidInput(str(e)) from None
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


async def _invalid_input(_request: Any, exc: KServeInvalidInput) -> JSONResponse:
    """kserve logs every 400 with a traceback; a client's mistake is worth one line at INFO."""
    return _reject(str(exc))


async def _inference_error(_request: Any, exc: InferenceError) -> JSONResponse:
    """kserve's InferenceError: one bounded line (its messages can quote whole payloads)."""
    reason = " ".join(str(exc).split())
    if reason.startswith("Failed to encode") and "binary_data" in reason:
        # kserve 0.21 decodes binary-extension BYTES inputs as UTF-8: raw image bytes cannot pass.
        return _reject("binary BYTES inputs are not supported for images; send them base64-encoded in JSON")
    logger.error("inference error: %s", reason[:2000])
    return JSONResponse(status_code=500, content={"error": reason[:300]})


def _reject(reason: str, *, status: int = 400, label: str = "invalid_input") -> JSONResponse:
    REJECTED.labels(reason=label).inc()
    logger.info("%d: %s", status, reason)
    return JSONResponse(status_code=status, content={"error": reason})


class _RESTServer(RESTServer):
    """kserve's RESTServer on our host, with the body limit and one-line validation errors.

    Picklable (it is the target of kserve's worker processes), so it keeps only plain settings.
    """

    def __init__(self, *args: Any, host: str, max_body_bytes: int, page: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.host = host
        self.max_body_bytes = max_body_bytes
        self.page = page

    def run(self, sockets: list[Any] | None = None) -> None:
        """A worker process's entry: load the models it received unloaded, then serve."""
        for model in self.dataplane.model_registry.get_models().values():
            if isinstance(model, FerModel) and not model.ready:
                model.load()
        super().run(sockets=sockets)

    def create_application(self) -> None:
        super().create_application()
        from uvicorn.importer import import_from_string

        app = import_from_string(FASTAPI_APP_IMPORT_STRING)
        app.add_exception_handler(RequestValidationError, _validation_error)
        app.add_exception_handler(KServeInvalidInput, _invalid_input)
        app.add_exception_handler(InferenceError, _inference_error)
        app.add_middleware(
            BodyLimitMiddleware,
            max_body_bytes=self.max_body_bytes,
            on_reject=lambda reason: REJECTED.labels(reason=reason).inc(),
        )
        _add_routes(app, page=self.page)


def _add_routes(app: Any, *, page: bool) -> None:
    """Our routes beside kserve's: the try-it page when asked for."""
    if page:
        from fer_model.serving.page import add_page_routes

        add_page_routes(app)


class _ModelServer(kserve.ModelServer):
    """ModelServer whose REST server binds `host` and whose gRPC server runs only when asked."""

    def __init__(self, *, host: str, max_body_bytes: int, page: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.page = page

    def start(self, models: list[Any]) -> None:
        # Same steps as kserve.ModelServer.start, with our REST server in place of kserve's.
        self._register_and_check_atleast_one_model_is_ready(models)
        rest = _RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            workers=self.workers,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
            host=self.host,
            max_body_bytes=self.max_body_bytes,
            page=self.page,
        )
        if self.workers > 1:
            self._rest_multiprocess_server = RESTServerMultiProcess(
                FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=self.workers,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            self._rest_multiprocess_server._rest_server = rest  # its workers run our server (host, limits)
            self.servers.append(self._rest_multiprocess_server.start())
        else:
            self._rest_server = rest
            self.servers.append(rest.start())
        if self.enable_grpc:
            from kserve.model_server import args as kserve_args
            from kserve.protocol.grpc.server import GRPCServer

            self._grpc_server = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


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
) -> None:
    """Load the model and serve it until SIGTERM / SIGINT.

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
    model = FerModel(name=name, model_dir=model_dir, limits=limits)
    model.load()
    server = _ModelServer(
        host=host,
        max_body_bytes=limits.max_body_bytes,
        page=page,
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

