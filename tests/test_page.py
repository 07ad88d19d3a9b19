"""The try-it page's wiring, without a browser or a model: routes, content types, headers, the flag.

tests/test_page_browser.py drives the page itself in Chromium against a real server.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("httpx")  # starlette's TestClient

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from fer_model.serving.page import ASSETS, CONTENT_SECURITY_POLICY, asset_bytes  # noqa: E402
from fer_model.serving.server import _add_routes  # noqa: E402


def _app(*, page: bool) -> TestClient:
    """An app shaped like kserve's: its own liveness answer at `/`, registered before ours."""
    app = FastAPI()

    @app.get("/")
    async def live() -> dict[str, Any]:
        return {"status": "alive"}

    _add_routes(app, page=page)
    return TestClient(app)


@pytest.mark.parametrize(
    ("path", "content_type", "needle"),
    [
        ("/", "text/html; charset=utf-8", b"<!doctype html>"),
        ("/page/app.js", "text/javascript; charset=utf-8", b'"use strict";'),
        ("/page/style.css", "text/css; charset=utf-8", b".box {"),
    ],
)
def test_assets_have_their_content_type_and_a_self_only_policy(path: str, content_type: str, needle: bytes) -> None:
    r = _app(page=True).get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    assert needle in r.content
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert r.headers["x-content-type-options"] == "nosniff"


def test_the_policy_allows_only_this_origin() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", ["/page/", "/page/../__init__.py", "/page/index.html", "/page/__init__.py"])
def test_nothing_but_the_listed_assets_is_served(path: str) -> None:
    assert _app(page=True).get(path).status_code == 404


def test_without_the_page_slash_is_kserves_liveness_again() -> None:
    client = _app(page=False)
    assert client.get("/").json() == {"status": "alive"}
    assert client.get("/page/app.js").status_code == 404


def test_the_page_loads_nothing_from_elsewhere_and_runs_no_inline_code() -> None:
    html = asset_bytes("index.html").decode()
    # data:, is the empty favicon (a browser asks for /favicon.ico otherwise).
    references = [r for r in re.findall(r'(?:src|href)="([^"]+)"', html) if r != "data:,"]
    assert sorted(references) == sorted(p for p in ASSETS if p != "/")
    assert "<script>" not in html and "style=" not in html and " on" + "click=" not in html
    script = asset_bytes("app.js").decode()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "://" not in script


def test_the_page_shows_the_model_cards_limitation() -> None:
    from fer_model.model_card import _LIMITATIONS

    bullet = next(b for b in _LIMITATIONS.split("\n- ") if "Not for decisions about people" in b)
    card = " ".join(bullet.replace("**", "").split())
    html = asset_bytes("index.html").decode()
    shown = re.search(r'<p class="limitation" id="limitation">(.*?)</p>', html, re.S).group(1)
    assert " ".join(re.sub(r"</?strong>", "", shown).split()) == card


def _luminance(colour: str) -> float:
    """WCAG relative luminance of #rrggbb."""
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize(
    ("ink", "background"),
    [("--ink", "--paper"), ("--muted", "--paper"), ("--warn-ink", "--warn-bg"), ("--error-ink", "--error-bg"),
     ("#fff", "--accent"), ("#fff", "--error-ink"), ("#000", "--box")],
)  # fmt: skip
def test_text_colours_meet_wcag_aa_contrast(ink: str, background: str) -> None:
    css = asset_bytes("style.css").decode()
    variables = dict(re.findall(r"(--[a-z-]+):\s*(#[0-9a-f]{6});", css))
    expand = {"#fff": "#ffffff", "#000": "#000000"}
    light, dark = sorted((_luminance(variables.get(c) or expand[c]) for c in (ink, background)), reverse=True)
    assert (light + 0.05) / (dark + 0.05) >= 4.5
