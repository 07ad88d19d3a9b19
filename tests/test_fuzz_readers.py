"""Hostile dataset sources (hypothesis): every reader yields one Record or Reject per input, never
another exception, never reads outside its folder, and `prepare` lists every rejection.

Sources are generated in fresh temporary folders: FER2013 CSVs with wrong pixel counts, non-numeric
pixels, quoted newlines, missing or extra columns, bad labels, BOMs, NULs, bytes that are not UTF-8
and fields past the csv module's limit; image folders with corrupt, truncated and empty files, odd
names (newlines, unicode, backslashes, hidden), links out of the folder, broken links and pipes;
RAF-DB label files naming paths; UTKFace names with out-of-range or non-ASCII digits.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fer_model.errors import DataError
from fer_model.readers import SourceSpec, read_source
from fer_model.readers.utkface import parse_name
from fer_model.records import SPLITS, Record, Reject
from fer_model.tasks import MISSING, TASKS
from tests._hostile import bounded, encoded, fuzz_settings, mutated

FER_PIXELS = 48 * 48
#: The content of a file outside every source folder: no record may ever carry it.
SECRET = b"SECRET outside the source folder " + bytes(range(256))
CLASSES = {t.name: t.num_classes for t in TASKS}


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    """A fresh folder per hypothesis example (function-scoped fixtures are shared by examples)."""
    with tempfile.TemporaryDirectory(prefix="fer-fuzz-") as tmp:
        yield Path(tmp)


def _read(kind: str, path: Path) -> list[Record | Reject]:
    return bounded(lambda: list(read_source(SourceSpec(kind=kind, path=str(path)), seed=0)), what=f"{kind} reader")


def _check_items(items: list[Record | Reject]) -> None:
    """What every reader promises about each item."""
    for item in items:
        assert isinstance(item, Record | Reject), type(item)
        if isinstance(item, Reject):
            assert item.reason.strip() and "\n" not in item.reason, item
            continue
        assert item.split in SPLITS
        assert all(MISSING <= v < CLASSES[t] for t, v in item.labels.items()), item.labels
        if isinstance(item.image, bytes):
            assert item.image != SECRET, f"{item.key}: read from outside the source folder"
        else:
            assert item.image.dtype == np.uint8 and item.image.shape == (48, 48)


# --- FER2013 CSV -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One generated CSV row: its bytes (newline included) and whether it is a usable record."""

    text: bytes
    good: bool | None  # None: a blank line, which is no input at all

    def __repr__(self) -> str:  # a failing example stays readable: rows hold 2,304 pixels
        shown = self.text if len(self.text) <= 80 else self.text[:60] + b"..." + self.text[-20:]
        return f"Row({shown!r}, {len(self.text):,} bytes, good={self.good})"


def _pixels(n: int, value: int = 128) -> str:
    return " ".join([str(value)] * n)


@st.composite
def csv_rows(draw: st.DrawFn) -> Row:
    code = draw(st.integers(0, 6))
    usage = draw(st.sampled_from(["Training", "PublicTest", "PrivateTest"]))
    pixels = _pixels(FER_PIXELS, draw(st.integers(0, 255)))
    kind = draw(
        st.sampled_from(
            ["good", "quoted_newline", "count", "not_numeric", "range", "emotion", "usage", "missing", "extra",
             "nul", "not_utf8", "huge_field", "blank"]
        )
    )  # fmt: skip
    half = FER_PIXELS // 2
    rows = {
        "good": (f"{code},{pixels},{usage}\n", True),
        "quoted_newline": (f'{code},"{_pixels(half)}\n{_pixels(half)}",{usage}\n', True),
        "count": (f"{code},{_pixels(draw(st.sampled_from([1, 47, 48, 2303, 2305, 4608])))},{usage}\n", False),
        "not_numeric": (f"{code},{draw(st.sampled_from(['x', '1.5', '1e3', '0x10', 'NaN', '+']))} {pixels},{usage}\n",
                        False),
        "range": (f"{code},{draw(st.sampled_from(['256', '-1', str(10**30)]))} {_pixels(FER_PIXELS - 1)},{usage}\n",
                  False),
        "emotion": (f"{draw(st.sampled_from(['7', '-1', 'x', '3.0', '', str(10**30)]))},{pixels},{usage}\n", False),
        "usage": (f"{code},{pixels},{draw(st.sampled_from(['', 'training', 'Test', 'Training!']))}\n", False),
        "missing": (f"{code},{pixels}\n", False),
        "extra": (f"{code},{pixels},{usage},more\n", False),
        "nul": (f"\0{code},{pixels},{usage}\n", False),
        "huge_field": (f"{code},{'1' * 200_000},{usage}\n", False),
        "blank": ("\n", None),
    }
    if kind == "not_utf8":
        return Row(f"{code}".encode() + b"\xff\xfe," + pixels.encode() + f",{usage}\n".encode(), False)
    text, good = rows[kind]
    return Row(text.encode(), good)


@fuzz_settings(max_examples=120)
@given(rows=st.lists(csv_rows(), max_size=12), bom=st.booleans(), crlf=st.booleans())
def test_fer2013_csv_rows_each_become_one_record_or_reject_keyed_by_line(
    rows: list[Row], bom: bool, crlf: bool
) -> None:
    with _scratch() as tmp:
        content = (b"\xef\xbb\xbf" if bom else b"") + b"emotion,pixels,Usage\n" + b"".join(r.text for r in rows)
        path = tmp / "fer2013.csv"
        path.write_bytes(content.replace(b"\n", b"\r\n") if crlf else content)
        items = _read("fer2013-csv", path)
        _check_items(items)
        expected, line = [], 1
        for row in rows:
            line += row.text.count(b"\n")
            if row.good is not None:
                expected.append((f"line {line}", row.good))
        assert [(i.key, isinstance(i, Record)) for i in items] == expected


@fuzz_settings(max_examples=200)
@given(content=st.one_of(st.binary(max_size=300), st.binary(max_size=60).map(lambda b: b"emotion,pixels,Usage\n" + b)))
def test_any_bytes_as_a_fer2013_csv_are_rows_or_a_data_error(content: bytes) -> None:
    with _scratch() as tmp:
        path = tmp / "fer2013.csv"
        path.write_bytes(content)
        try:
            items = _read("fer2013-csv", path)
        except DataError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            return
        _check_items(items)


# --- image folders -----------------------------------------------------------------------------

#: What an entry of a folder source is. Kinds after "link_inside" must always be rejected.
CONTENT_KINDS = ("image", "corrupt", "empty", "random", "link_inside", "link_outside", "link_dir_outside",
                 "link_broken", "fifo")  # fmt: skip
REFUSED_KINDS = frozenset({"link_outside", "link_dir_outside", "link_broken", "fifo"})

#: File name stems: plain, unicode, newlines, spaces, backslashes, dots, very long.
STEMS = st.one_of(
    st.sampled_from(["a", "Training_1", "PublicTest_2", "..x", ".hidden", "a\nb", "ü ñ 表情", "back\\slash"]),
    st.just("x" * 200),
    st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=12),
)


@dataclass(frozen=True)
class Entry:
    folder: str
    stem: str
    suffix: str
    kind: str

    @property
    def rel(self) -> str:
        return f"{self.folder}/{self.stem}{self.suffix}"


def _fits_a_name(entry: Entry) -> bool:
    name = f"{entry.stem}{entry.suffix}"
    return name not in (".", "..") and len(name.encode()) <= 255


def entries(folders: list[str], suffixes: list[str]) -> st.SearchStrategy[list[Entry]]:
    taken = {part for folder in folders for part in folder.split("/")}  # a file there would block a folder

    def fits(e: Entry) -> bool:
        return _fits_a_name(e) and f"{e.stem}{e.suffix}" not in taken

    entry = st.builds(Entry, st.sampled_from(folders), STEMS, st.sampled_from(suffixes), st.sampled_from(CONTENT_KINDS))
    return st.lists(entry.filter(fits), max_size=10, unique_by=lambda e: e.rel)


def _build(root: Path, outside: Path, items: list[Entry], corrupt: bytes) -> None:
    """Write `items` under `root`; links that lead out point into `outside` (holding SECRET)."""
    (outside / "secret.jpg").write_bytes(SECRET)
    for e in items:
        path = root / e.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if e.kind == "image":
            path.write_bytes(encoded("JPEG"))
        elif e.kind == "corrupt":
            path.write_bytes(corrupt)
        elif e.kind == "empty":
            path.write_bytes(b"")
        elif e.kind == "random":
            path.write_bytes(bytes(range(64, 0, -1)))  # no format starts like this
        elif e.kind == "link_inside":
            (root / "inside.bin").write_bytes(encoded("PNG"))
            path.symlink_to(root / "inside.bin")
        elif e.kind == "link_outside":
            path.symlink_to(outside / "secret.jpg")
        elif e.kind == "link_dir_outside":
            path.symlink_to(outside, target_is_directory=True)
        elif e.kind == "link_broken":
            path.symlink_to(root / "nowhere.jpg")
        else:
            os.mkfifo(path)


def _visible(e: Entry) -> bool:
    return not any(part.startswith(".") for part in e.rel.split("/"))


def _check_folder_source(kind: str, items: list[Entry], *, always_records: list[Entry], corrupt: bytes) -> None:
    with _scratch() as tmp:
        root, outside = tmp / "source", tmp / "outside"
        root.mkdir()
        outside.mkdir()
        _build(root, outside, [*items, *always_records], corrupt)
        read = _read(kind, root)
        _check_items(read)
        by_key = {i.key: i for i in read}
        assert len(by_key) == len(read), "one item per input"
        expected = {e.rel for e in [*items, *always_records] if _visible(e)} | (
            {"inside.bin"} if any(e.kind == "link_inside" for e in items) else set()
        )
        assert set(by_key) == expected, "every visible input, and nothing else, becomes an item"
        for e in items:
            if e.rel in by_key and e.kind in REFUSED_KINDS:
                assert isinstance(by_key[e.rel], Reject), e
        for e in always_records:
            assert isinstance(by_key[e.rel], Record), by_key[e.rel]


@fuzz_settings(max_examples=100)
@given(
    items=entries(["happy", "Sad", "anger", "unknown", "happy/nested"], [".jpg", ".PNG", ".jpeg", ".txt", ""]),
    corrupt=st.sampled_from(["JPEG", "PNG"]).map(encoded).flatmap(mutated),
)
def test_folder_source_entries_each_become_one_item_and_links_never_lead_out(
    items: list[Entry], corrupt: bytes
) -> None:
    _check_folder_source("folder", items, always_records=[Entry("happy", "kept", ".jpg", "image")], corrupt=corrupt)


@fuzz_settings(max_examples=100)
@given(
    items=entries(["train/happy", "test/sad", "validation/neutral", "train", "other/happy"], [".jpg", ".png", ""]),
    corrupt=st.sampled_from(["JPEG", "PNG"]).map(encoded).flatmap(mutated),
)
def test_fer2013_folder_entries_each_become_one_item_and_links_never_lead_out(
    items: list[Entry], corrupt: bytes
) -> None:
    kept = Entry("train/happy", "Training_0", ".jpg", "image")
    _check_folder_source("fer2013-folder", items, always_records=[kept], corrupt=corrupt)


UTK_FIELDS = st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["", "²", "٣", "1.5", "x", "0" * 40]))


@st.composite
def utk_names(draw: st.DrawFn) -> str:
    fields = draw(st.lists(UTK_FIELDS, min_size=2, max_size=5))
    return "_".join(fields) + draw(st.sampled_from([".jpg.chip.jpg", ".jpg", ".JPG", ".png", ".jpg.chip"]))


@fuzz_settings(max_examples=600)
@given(name=st.one_of(utk_names(), st.text(max_size=40)))
def test_utkface_names_parse_to_labels_in_range_or_a_reason(name: str) -> None:
    labels = parse_name(name)
    if isinstance(labels, str):
        assert labels.strip() and "\n" not in labels
        return
    assert set(labels) == {"age", "gender", "race"}
    assert all(MISSING <= v < CLASSES[t] for t, v in labels.items()), labels


@fuzz_settings(max_examples=100)
@given(
    items=st.lists(
        st.builds(Entry, st.sampled_from(["part1", "part2/deeper"]), utk_names().map(lambda n: n.rsplit(".jpg", 1)[0]),
                  st.just(".jpg.chip.jpg"), st.sampled_from(CONTENT_KINDS)).filter(_fits_a_name),
        max_size=10, unique_by=lambda e: e.rel,
    ),
    corrupt=st.sampled_from(["JPEG", "PNG"]).map(encoded).flatmap(mutated),
)
def test_utkface_entries_each_become_one_item_and_links_never_lead_out(items: list[Entry], corrupt: bytes) -> None:
    kept = Entry("part1", "25_1_2_20170116174525125", ".jpg.chip.jpg", "image")
    _check_folder_source("utkface", items, always_records=[kept], corrupt=corrupt)


# --- RAF-DB ------------------------------------------------------------------------------------

ANNOTATION = "1.0\t2.0\n3.0\t2.0\n2.0\t3.0\n1.5\t4.0\n2.5\t4.0\n1\n2\n3\n"
RAF_KINDS = ("good", "bad_label", "path_name", "no_image", "image_outside", "annotation_outside", "bad_annotation",
             "duplicate", "three_fields", "blank")  # fmt: skip


def _raf_line(n: int, kind: str, label: int) -> tuple[str, str | None]:
    """(label-file line, the stem of the image and annotation it comes with, if any)."""
    name = f"train_{n:05d}.jpg" if n % 2 else f"test_{n:05d}.jpg"
    lines = {
        "bad_label": f"{name} {label + 7}",
        "path_name": f"train_../../{name} {label}" if n % 3 else f"train_{n}\0.jpg {label}",
        "three_fields": f"{name} {label} extra",
        "blank": "   ",
    }
    stem = None if kind in ("path_name", "three_fields", "blank") else name.removesuffix(".jpg")
    return lines.get(kind, f"{name} {label}"), stem


def _build_raf(root: Path, outside: Path, kinds: list[str]) -> list[str]:
    """The RAF-DB `basic` layout for one label line per kind; returns the lines written."""
    (root / "EmoLabel").mkdir(parents=True)
    (root / "Image/aligned").mkdir(parents=True)
    (root / "Annotation/manual").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(SECRET)
    (outside / "annotation.txt").write_text(ANNOTATION)
    lines = []
    for n, kind in enumerate(kinds):
        if kind == "duplicate" and lines:
            lines.append(lines[0])
            continue
        line, stem = _raf_line(n, kind, label=1 + n % 7)
        lines.append(line)
        if stem is None:
            continue
        image = root / "Image/aligned" / f"{stem}_aligned.jpg"
        annotation = root / "Annotation/manual" / f"{stem}_manu_attri.txt"
        if kind == "image_outside":
            image.symlink_to(outside / "secret.jpg")
        elif kind != "no_image":
            image.write_bytes(encoded("JPEG"))
        if kind == "annotation_outside":
            annotation.symlink_to(outside / "annotation.txt")
        elif kind == "bad_annotation":
            annotation.write_text("not\nan\nannotation")
        else:
            annotation.write_text(ANNOTATION)
    (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return lines


@fuzz_settings(max_examples=100)
@given(kinds=st.lists(st.sampled_from(RAF_KINDS), max_size=10))
def test_rafdb_label_lines_each_become_one_item_and_never_lead_out(kinds: list[str]) -> None:
    with _scratch() as tmp:
        root, outside = tmp / "basic", tmp / "outside"
        outside.mkdir()
        lines = _build_raf(root, outside, kinds)
        read = _read("rafdb", root)
        _check_items(read)
        assert len(read) == sum(1 for line in lines if line.strip()), "one item per label line"
        records = {r.key: r for r in read if isinstance(r, Record)}
        for line, kind in zip(lines, kinds, strict=True):
            name = line.split()[0] if line.strip() else ""
            if kind in ("good", "bad_annotation", "annotation_outside"):
                assert name in records, (kind, line)
                attributes = {"gender", "race", "age"} & set(records[name].labels)
                assert attributes == (set() if kind != "good" else {"gender", "race", "age"}), (kind, records[name])
            if kind in ("bad_label", "path_name", "no_image", "image_outside", "three_fields"):
                assert name not in records, (kind, line)


# --- prepare: some good and some bad inputs; every rejection reaches the manifest ---------------


def _fer_csv(path: Path, rows: list[Row]) -> None:
    path.write_bytes(b"emotion,pixels,Usage\n" + b"".join(r.text for r in rows))


@fuzz_settings(max_examples=20)
@given(
    rows=st.lists(csv_rows(), max_size=6),
    items=st.lists(
        st.builds(Entry, st.just("part1"), utk_names().map(lambda n: n.rsplit(".jpg", 1)[0]),
                  st.just(".jpg.chip.jpg"), st.sampled_from(CONTENT_KINDS)).filter(_fits_a_name),
        max_size=6, unique_by=lambda e: e.rel,
    ),
    corrupt=st.sampled_from(["JPEG", "PNG", "GIF"]).map(encoded).flatmap(mutated),
)
def test_prepare_completes_and_its_manifest_lists_every_rejection(
    rows: list[Row], items: list[Entry], corrupt: bytes
) -> None:
    from fer_model.prepare import prepare_dataset

    good_row = Row(f"3,{_pixels(FER_PIXELS)},Training\n".encode(), True)
    kept = Entry("part1", "25_1_2_20170116174525125", ".jpg.chip.jpg", "image")
    with _scratch() as tmp:
        csv_path, root, outside = tmp / "fer.csv", tmp / "utk", tmp / "outside"
        root.mkdir()
        outside.mkdir()
        _fer_csv(csv_path, [good_row, *rows])
        _build(root, outside, [kept, *items], corrupt)
        sources = [f"fer2013-csv:{csv_path}", f"utkface:{root}"]
        inputs = [i for s in sources for i in read_source(s)]
        out = bounded(lambda: prepare_dataset(sources=sources, out_dir=tmp / "dataset"), what="prepare")
        manifest = json.loads((out / "manifest.json").read_text())
        rejected = {(r["source"], r["key"]) for r in manifest["rejects"]}
        assert manifest["num_inputs"] == len(inputs) == manifest["num_samples"] + len(manifest["rejects"])
        assert all(r["reason"].strip() and "\n" not in r["reason"] for r in manifest["rejects"])
        for item in inputs:  # a reader's reject keeps its reason; a record is kept or rejected later
            if isinstance(item, Reject):
                assert {"source": item.source, "key": item.key, "reason": item.reason} in manifest["rejects"]
        for e in items:
            if e.kind in ("empty", "random") and any(i.key == e.rel and isinstance(i, Record) for i in inputs):
                assert ("utkface", e.rel) in rejected, e


def test_prepare_names_each_kind_of_bad_input_in_the_manifest(tmp_path: Path) -> None:
    from fer_model.prepare import prepare_dataset

    root, outside = tmp_path / "utk", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    good = "25_1_2_20170116174525125.jpg.chip.jpg"
    entries_ = [
        Entry("p", "25_1_2_20170116174525125", ".jpg.chip.jpg", "image"),
        Entry("p", "30_0_0_1", ".jpg.chip.jpg", "empty"),
        Entry("p", "31_0_0_1", ".jpg.chip.jpg", "link_outside"),
        Entry("p", "32_0_0_1", ".jpg.chip.jpg", "fifo"),
        Entry("p", "33_5_0_1", ".jpg.chip.jpg", "image"),
        Entry("p", "²_0_0_1", ".jpg.chip.jpg", "image"),
    ]
    _build(root, outside, entries_, corrupt=b"")
    (root / "p" / "34_0_0_1.jpg.chip.jpg").write_bytes(encoded("JPEG")[: len(encoded("JPEG")) // 2])  # truncated
    csv_path = tmp_path / "fer.csv"
    _fer_csv(csv_path, [Row(f"3,{_pixels(FER_PIXELS)},Training\n".encode(), True),
                        Row(f"3,{_pixels(5)},Training\n".encode(), False),
                        Row(f"3,{'1' * 200_000},Training\n".encode(), False)])
    out = prepare_dataset(sources=[f"fer2013-csv:{csv_path}", f"utkface:{root}"], out_dir=tmp_path / "ds")
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {(r["source"], r["key"]): r["reason"] for r in manifest["rejects"]}
    assert manifest["num_samples"] == 2  # one CSV row, one UTKFace image
    assert reasons == {
        ("fer2013", "line 3"): "5 pixels, expected 2304 (48x48)",
        ("fer2013", "line 4"): reasons[("fer2013", "line 4")],
        ("utkface", "p/30_0_0_1.jpg.chip.jpg"): "undecodable image: image data is empty (0 bytes)",
        ("utkface", "p/31_0_0_1.jpg.chip.jpg"): reasons[("utkface", "p/31_0_0_1.jpg.chip.jpg")],
        ("utkface", "p/32_0_0_1.jpg.chip.jpg"): reasons[("utkface", "p/32_0_0_1.jpg.chip.jpg")],
        ("utkface", "p/33_5_0_1.jpg.chip.jpg"): "gender code 5; expected 0 (male) or 1 (female)",
        ("utkface", "p/²_0_0_1.jpg.chip.jpg"): reasons[("utkface", "p/²_0_0_1.jpg.chip.jpg")],
        ("utkface", "p/34_0_0_1.jpg.chip.jpg"): reasons[("utkface", "p/34_0_0_1.jpg.chip.jpg")],
    }
    assert "field larger than field limit" in reasons[("fer2013", "line 4")]
    assert "outside the source folder" in reasons[("utkface", "p/31_0_0_1.jpg.chip.jpg")]
    assert "not a regular file" in reasons[("utkface", "p/32_0_0_1.jpg.chip.jpg")]
    assert "non-numeric field" in reasons[("utkface", "p/²_0_0_1.jpg.chip.jpg")]
    assert reasons[("utkface", "p/34_0_0_1.jpg.chip.jpg")].startswith("undecodable image: image data is truncated")
    assert ("utkface", f"p/{good}") not in reasons
