"""The try-it page: one HTML file, a script and a style sheet, served by the predictor itself.

No build step and no CDN: every asset is a file in this package, so the page works offline. The page
posts the picked photo (or a webcam snapshot) to the V1 endpoint (`{"instances": [{"b64": ...}]}`) and
draws each face's box and answers; it holds no logic the endpoint does not already have.

`add_page_routes` is the only entry point: it puts `GET /` and the page's assets in front of the app's
routes. The assets are a fixed table (no path from the request reaches the file system), served with
their content types and a Content-Security-Policy that allows nothing but this origin.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

#: Browsers may load scripts, styles, images, fetches only from this server; no inline code, no frames.
#: `blob:` images are the user's own photo (an object URL); `mediastream:` is the webcam preview.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

#: URL path -> (file in this package, content type).
ASSETS: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/page/style.css": ("style.css", "text/css; charset=utf-8"),
}

_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The assets change only with the package; revalidating keeps an upgraded server's page current.
    "Cache-Control": "no-cache",
}


def asset_bytes(name: str) -> bytes:
    """The content of one page file shipped in this package (e.g. "index.html")."""
    return resources.files(__name__).joinpath(name).read_bytes()


def add_page_routes(app: Any) -> None:
    """Serve the page at `GET /` and its assets under `/page/` on a FastAPI/Starlette `app`.

    kserve registers its own liveness answer at `/` first and Starlette takes the first matching
    route, so the page's routes go in front of the existing ones (a 200 at `/` still reads as alive
    to an HTTP probe; `/v2/health/live` keeps the JSON answer).
    """
    from starlette.responses import Response
    from starlette.routing import Route

    def endpoint(body: bytes, content_type: str) -> Any:
        async def serve_asset(_request: Any) -> Response:
            return Response(content=body, media_type=content_type, headers=_HEADERS)

        return serve_asset

    routes = [
        Route(path, endpoint(asset_bytes(name), content_type), methods=["GET", "HEAD"])
        for path, (name, content_type) in ASSETS.items()
    ]
    app.router.routes[:0] = routes
