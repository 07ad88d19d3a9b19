"""Request limits of the predictor server, and the ASGI middleware that enforces them before the app.

Limits keep one request from taking the server down: the body size bounds what is buffered, the
image count bounds the work per request, the pixel limit (checked from the image header, before
decoding) stops decompression bombs, and the face limit bounds the model batch. Across requests,
the admission limit bounds the queue in front of the one inference thread: past it, a request is
refused at once with 503 and Retry-After instead of waiting without bound.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from fer_model.errors import ConfigError

logger = logging.getLogger(__name__)

MIB = 1024 * 1024

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class RequestLimits:
    """What one prediction request may carry.

    Attributes:
        max_body_bytes: Largest request body; larger ones get 413 (10 MiB by default, room for a few
            base64 photos: base64 adds a third).
        max_images: Most images (or pre-aligned faces) in one request.
        max_pixels: Largest width x height of one encoded image, read from its header before decoding
            (16 MP, a 12 MP phone photo fits; a decoded 16 MP colour image is 48 MB).
        max_faces_per_image: Most faces kept per image, largest first; bounds the model batch.
        max_pending_requests: Most prediction requests admitted at once (being computed, or waiting
            for the one inference thread); more get 503 with Retry-After. 32 requests of ~0.1 s
            each wait at most a few seconds, well inside a client's timeout and the 30 s shutdown grace.
    """

    max_body_bytes: int = 10 * MIB
    max_images: int = 16
    max_pixels: int = 16_000_000
    max_faces_per_image: int = 16
    max_pending_requests: int = 32

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_images", "max_pixels", "max_faces_per_image", "max_pending_requests"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be an integer >= 1, got {value!r}")


class BodyLimitMiddleware:
    """Refuse request bodies above `max_body_bytes` with 413, without buffering them.

    A declared Content-Length above the limit is refused before any of the body is read (uvicorn
    discards the rest as it arrives). A chunked body is counted as it streams and refused as soon
    as it passes the limit, so at most the limit is ever held in memory.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, on_reject: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._reject(send, f"request body is {declared:,} bytes")
            return
        if declared is not None:
            await self.app(scope, receive, send)
            return
        # No Content-Length (chunked): read up to the limit, then hand the buffered body on.
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_body_bytes:
                await self._reject(send, f"request body passed {total:,} bytes")
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replay_receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replay_receive, send)

    async def _reject(self, send: Send, what: str) -> None:
        reason = f"{what}, more than the limit of {self.max_body_bytes:,} bytes; send fewer or smaller images"
        if self.on_reject is not None:
            self.on_reject("body_too_large")
        logger.info("413: %s", reason)
        await _send_json(send, status=413, body={"error": reason})


#: Seconds a refused client is told to wait: about the time the inference thread takes to work
#: through a few queued requests, so a retry usually finds room.
RETRY_AFTER_S = 1


def is_prediction(scope: Scope) -> bool:
    """A V1 `:predict` or V2 `/infer` request: the only requests that queue for the inference thread."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return False
    path: str = scope["path"]
    return (path.startswith("/v1/models/") and path.endswith(":predict")) or (
        path.startswith("/v2/models/") and path.endswith("/infer")
    )


class AdmissionLimitMiddleware:
    """Admit at most `max_pending_requests` prediction requests at once; refuse the rest with 503.

    One inference thread computes requests one at a time; without a bound, a burst queues requests
    (and their bodies) in memory until clients time out, and every queued request only adds latency
    to the ones behind it. A refusal is immediate, before the body is read, and carries Retry-After
    so clients and load balancers back off. Health, readiness, metadata, metrics and the page are
    never refused: a busy server must still look alive. The count is per process (one event loop, so
    no lock); with `--workers N` each worker admits its own `max_pending_requests`.
    """

    def __init__(
        self, app: ASGIApp, *, max_pending_requests: int, on_reject: Callable[[str], None] | None = None
    ) -> None:
        self.app = app
        self.max_pending_requests = max_pending_requests
        self.on_reject = on_reject
        self.pending = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not is_prediction(scope):
            await self.app(scope, receive, send)
            return
        if self.pending >= self.max_pending_requests:
            await self._reject(send)
            return
        self.pending += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.pending -= 1

    async def _reject(self, send: Send) -> None:
        reason = (
            f"server busy: {self.max_pending_requests} prediction requests are already being computed or waiting "
            f"(max_pending_requests={self.max_pending_requests}); retry after {RETRY_AFTER_S} s, or raise the limit "
            "with `fer-mtl serve --max-pending-requests N`"
        )
        if self.on_reject is not None:
            self.on_reject("overloaded")
        logger.info("503: %s", reason)
        retry_after = (b"retry-after", str(RETRY_AFTER_S).encode())
        await _send_json(send, status=503, body={"error": reason}, headers=[retry_after])


async def _send_json(
    send: Send, *, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
