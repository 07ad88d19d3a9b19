"""Request limits of the predictor server, and the ASGI middleware that enforces the body size.

Limits keep one request from taking the server down: the body size bounds what is buffered, the
image count bounds the work per request, the pixel limit (checked from the image header, before
decoding) stops decompression bombs, and the face limit bounds the model batch.
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
    """

    max_body_bytes: int = 10 * MIB
    max_images: int = 16
    max_pixels: int = 16_000_000
    max_faces_per_image: int = 16

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_images", "max_pixels", "max_faces_per_image"):
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
        body = json.dumps({"error": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
