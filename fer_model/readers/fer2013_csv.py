"""FER2013 as the original challenge CSV: `emotion,pixels,Usage`, 48x48 space-separated gray pixels.

FER2013 codes emotions 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral; they are
remapped to `tasks.EMOTION` order. `Usage` gives the split (Training / PublicTest / PrivateTest).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fer_model.errors import DataError
from fer_model.readers._common import apply_split_mode, shown
from fer_model.records import Record, Reject, Split
from fer_model.tasks import EMOTION

logger = logging.getLogger(__name__)

SIZE = 48
_FER_EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: FER2013 emotion code -> our emotion index.
FER_TO_EMOTION: dict[int, int] = {code: EMOTION.index(name) for code, name in enumerate(_FER_EMOTIONS)}
USAGE_TO_SPLIT: dict[str, Split] = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
_COLUMNS = ("emotion", "pixels", "Usage")


def _parse_row(row: dict[str | None, str | None]) -> tuple[np.ndarray, int, Split] | str:
    """(image, emotion, split) for a good row, else the reason it is unusable."""
    missing = [c for c in _COLUMNS if row.get(c) in (None, "")]
    if missing:
        return f"missing value for column(s) {', '.join(missing)}"
    if row.get(None):
        return f"{len(row[None])} more field(s) than the header has"  # type: ignore[arg-type]
    code_text, pixel_text, usage = (str(row[c]).strip() for c in _COLUMNS)
    try:
        code = int(code_text)
    except ValueError:
        return f"emotion {shown(code_text)} is not an integer"
    if code not in FER_TO_EMOTION:
        return f"unknown emotion code {code}; expected 0..{len(FER_TO_EMOTION) - 1}"
    if usage not in USAGE_TO_SPLIT:
        return f"unknown Usage {shown(usage)}; expected one of {sorted(USAGE_TO_SPLIT)}"
    try:
        values = np.array(pixel_text.split(), dtype=np.int64)
    except (ValueError, OverflowError):  # OverflowError: a number past int64
        return "pixels are not all integers in 0..255"
    if values.size != SIZE * SIZE:
        return f"{values.size} pixels, expected {SIZE * SIZE} ({SIZE}x{SIZE})"
    if values.min() < 0 or values.max() > 255:
        return "pixel values outside 0..255"
    return values.astype(np.uint8).reshape(SIZE, SIZE), FER_TO_EMOTION[code], USAGE_TO_SPLIT[usage]


class _CountedLines:
    """The file's lines, counted: the csv module's own `line_num` lags by one when a row fails."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.count = 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        line = next(self.lines)
        self.count += 1
        return line


def _rows(reader: csv.DictReader, lines: _CountedLines) -> Iterator[tuple[str, dict[str | None, str | None] | str]]:
    """("line N", row) per data row, N its last line; a row the csv module cannot split (a field past
    its size limit, say) comes as the reason instead, and reading goes on with the next line."""
    while True:
        try:
            row: dict[str | None, str | None] | str = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            row = f"not a CSV row: {e}"
        yield f"line {lines.count}", row


def read_fer2013_csv(
    path: Path,
    *,
    source: str = "fer2013",
    seed: int = 0,
    split_mode: str = "official",
    notes: list[str] | None = None,
) -> Iterator[Record | Reject]:
    """Yield one Record (48x48 uint8 array, emotion only) or Reject per data row of a FER2013 CSV.

    The split comes from `Usage`; split mode "holdout" turns PublicTest into test and a seeded 10% of
    Training into validation. Keys are "line N" (line 1 is the header).

    Raises:
        DataError: the file is missing, empty, or its header lacks `emotion`, `pixels` or `Usage`.
    """
    del notes  # FER2013 has nothing to note
    if not path.is_file():
        raise DataError(f"FER2013 CSV {path} does not exist or is not a file")
    # utf-8-sig: a spreadsheet's BOM is not part of the first column's name. errors="replace": a row
    # with bytes that are not UTF-8 fails its own checks and is rejected by line, not the whole file.
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        lines = _CountedLines(iter(f))
        reader = csv.DictReader(lines)
        try:
            header = reader.fieldnames
        except csv.Error as e:
            raise DataError(f"FER2013 CSV {path} header is not CSV ({e}); expected `emotion,pixels,Usage`") from e
        if not header:
            raise DataError(f"FER2013 CSV {path} is empty; expected a header `emotion,pixels,Usage`")
        lacking = [c for c in _COLUMNS if c not in header]
        if lacking:
            raise DataError(
                f"FER2013 CSV {path} header {header} lacks column(s) {lacking}; expected `emotion,pixels,Usage`"
            )
        for key, row in _rows(reader, lines):
            parsed = _parse_row(row) if isinstance(row, dict) else row
            if isinstance(parsed, str):
                yield Reject(source, key, parsed)
                continue
            image, emotion, split = parsed
            split = apply_split_mode(split, key, seed=seed, split_mode=split_mode)
            yield Record(source, key, image, {"emotion": emotion}, split, is_face_crop=True)
