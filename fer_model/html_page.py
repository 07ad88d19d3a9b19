"""Our Markdown reports as one self-contained HTML page, images inlined as `data:` URIs.

The KFP UI shows an HTML artifact on its own, without the folder around it and without internet
access, so every image has to travel inside the page. Only the Markdown our reports write is
understood (headings, pipe tables, bullet lists, bold, inline code, images, paragraphs): that
keeps the page builder free of a Markdown dependency and its extensions.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from collections.abc import Callable
from pathlib import Path

from fer_model.errors import DataError

_HEADING = re.compile(r"(#{1,6}) +(.*)")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_TABLE_RULE = re.compile(r"\|[\s:|-]+\|")
_STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:1em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "th{background:#f0f0f0}img{max-width:100%}code{background:#f4f4f4;padding:0 3px}"
)


def data_uri(path: str | os.PathLike[str]) -> str:
    """The image file at `path` as a `data:image/...;base64,` URI."""
    image = Path(path)
    mime = mimetypes.guess_type(image.name)[0]
    if mime is None or not mime.startswith("image/"):
        raise DataError(f"cannot inline {image}: not an image file type (expected .png, .jpg, .svg, ...)")
    if not image.is_file():
        raise DataError(f"cannot inline {image}: no such file; write the image before the page")
    return f"data:{mime};base64,{base64.b64encode(image.read_bytes()).decode('ascii')}"


def markdown_to_html(text: str, *, images_dir: str | os.PathLike[str], title: str) -> str:
    """One HTML page from report Markdown; each `![alt](name.png)` is read from `images_dir` and inlined.

    Raises:
        DataError: an image is missing, is not an image, or lies outside `images_dir`.
    """
    folder = Path(images_dir)
    lines = text.splitlines()
    body: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif heading := _HEADING.fullmatch(line):
            level = len(heading.group(1))
            body.append(f"<h{level}>{_inline(heading.group(2), folder)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block, i = _take(lines, i, lambda s: s.startswith("|"))
            body.append(_table(block, folder))
        elif line.startswith("- "):
            block, i = _take(lines, i, lambda s: s.startswith("- "))
            body.append("<ul>" + "".join(f"<li>{_inline(s[2:], folder)}</li>" for s in block) + "</ul>")
        else:
            block, i = _take(lines, i, lambda s: bool(s.strip()) and not s.startswith(("|", "- ", "#")))
            body.append(f"<p>{_inline(' '.join(block), folder)}</p>")
    head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style>"
    return f"<!DOCTYPE html>\n<html><head>{head}</head><body>\n" + "\n".join(body) + "\n</body></html>\n"


def _take(lines: list[str], start: int, belongs: Callable[[str], bool]) -> tuple[list[str], int]:
    """The run of lines from `start` for which `belongs(line)` holds, and the index after it."""
    end = start + 1
    while end < len(lines) and belongs(lines[end]):
        end += 1
    return lines[start:end], end


def _table(rows: list[str], folder: Path) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows if not _TABLE_RULE.fullmatch(row)]
    if not cells:
        return ""
    header = "".join(f"<th>{_inline(c, folder)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{_inline(c, folder)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str, folder: Path) -> str:
    """Escaped text with images inlined, `code` and **bold** marked up."""
    parts: list[str] = []
    last = 0
    for image in _IMAGE.finditer(text):
        parts.append(_format(text[last : image.start()]))
        alt, name = image.groups()
        path = (folder / name).resolve()
        if not path.is_relative_to(folder.resolve()):
            raise DataError(f"image {name!r} lies outside {folder}; reports may only inline their own images")
        parts.append(f'<img alt="{html.escape(alt)}" src="{data_uri(path)}">')
        last = image.end()
    parts.append(_format(text[last:]))
    return "".join(parts)


def _format(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", escaped))
