"""fer_model.html_page: report Markdown to one self-contained HTML page."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_model.errors import DataError
from fer_model.html_page import data_uri, markdown_to_html


class _References(HTMLParser):
    """Every src/href of the page's tags (script bodies are not parsed as tags, as in a browser)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.other: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                if tag == "img":
                    self.images.append(value)
                else:
                    self.other.append((tag, name, value))


def page_references(page: str) -> _References:
    """The page's <img> sources and any other src/href (a self-contained page has none of those)."""
    parser = _References()
    parser.feed(page)
    parser.close()
    return parser


def decoded_images(page: str) -> list[np.ndarray]:
    """Every <img> of `page` decoded from its data: URI; fails the test on a link to a file."""
    refs = page_references(page)
    assert refs.other == [], f"the page links outside itself: {refs.other}"
    images = []
    for src in refs.images:
        assert src.startswith("data:image/png;base64,"), f"<img> is not inlined: {src[:60]}"
        raw = np.frombuffer(base64.b64decode(src.split(",", 1)[1]), dtype=np.uint8)
        image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
        assert image is not None and image.size > 0
        images.append(image)
    return images


def _png(path: Path, value: int) -> Path:
    cv2.imwrite(str(path), np.full((4, 6, 3), value, dtype=np.uint8))
    return path


def test_images_are_inlined_and_markdown_becomes_html(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 10)
    _png(tmp_path / "b.png", 200)
    text = "\n".join([
        "# Title", "", "Some `code` and **bold** <script>x</script>.", "",
        "| task | acc |", "| --- | --- |", "| emotion | 0.5 |", "",
        "- one", "- two", "", "![first](a.png)", "", "![second](b.png)",
    ])
    page = markdown_to_html(text, images_dir=tmp_path, title="T & t")
    images = decoded_images(page)
    assert [int(im[0, 0, 0]) for im in images] == [10, 200]
    assert "<h1>Title</h1>" in page and "<title>T &amp; t</title>" in page
    assert "<code>code</code>" in page and "<strong>bold</strong>" in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "<th>task</th>" in page and "<td>emotion</td><td>0.5</td>" in page and "---" not in page
    assert "<ul><li>one</li><li>two</li></ul>" in page


def test_missing_or_escaping_images_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        markdown_to_html("![x](gone.png)", images_dir=tmp_path, title="t")
    _png(tmp_path / "outside.png", 1)
    (tmp_path / "report").mkdir()
    with pytest.raises(DataError, match="lies outside"):
        markdown_to_html("![x](../outside.png)", images_dir=tmp_path / "report", title="t")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not an image"):
        data_uri(tmp_path / "notes.txt")
