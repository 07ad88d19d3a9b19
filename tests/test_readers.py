"""Readers on small files written here in each real format, including every malformed case."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fer_model.errors import ConfigError, DataError
from fer_model.readers import KINDS, SourceSpec, read_source
from fer_model.readers.rafdb import stratified_validation
from fer_model.records import Record, Reject
from fer_model.tasks import EMOTION, MISSING, RACE

PIXELS = " ".join(str(i % 256) for i in range(48 * 48))


def _read(kind: str, path: Path, **kwargs) -> list[Record | Reject]:
    return list(read_source(SourceSpec(kind, str(path)), **kwargs))


def _records(items: list[Record | Reject]) -> list[Record]:
    return [i for i in items if isinstance(i, Record)]


def _rejects(items: list[Record | Reject]) -> list[Reject]:
    return [i for i in items if isinstance(i, Reject)]


# --- SourceSpec / read_source -------------------------------------------------------------------


def test_spec_parse_splits_on_the_first_colon_only():
    spec = SourceSpec.parse("rafdb:gs://bucket/raf/basic")
    assert (spec.kind, spec.path, spec.name) == ("rafdb", "gs://bucket/raf/basic", "rafdb")
    assert SourceSpec.parse("fer2013-csv:/d/fer.csv").name == "fer2013"


@pytest.mark.parametrize(
    ("text", "match"),
    [("rafdb", "KIND:PATH"), ("rafdb:", "KIND:PATH"), (":/x", "KIND:PATH"), ("celeba:/x", "unknown source kind")],
)
def test_spec_parse_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        SourceSpec.parse(text)


def test_read_source_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_source(f"rafdb:{tmp_path / 'missing'}")
    with pytest.raises(DataError, match="remote"):
        read_source("rafdb:gs://bucket/raf")
    with pytest.raises(ConfigError, match="split_mode"):
        read_source(f"rafdb:{tmp_path}", split_mode="random")  # type: ignore[arg-type]
    assert set(KINDS) == {"fer2013-csv", "fer2013-folder", "rafdb", "folder", "utkface"}


# --- FER2013 CSV --------------------------------------------------------------------------------


def _fer_csv(path: Path, rows: list[str], header: str = "emotion,pixels,Usage") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.mark.parametrize(
    ("code", "name"),
    [(0, "angry"), (1, "disgust"), (2, "fear"), (3, "happy"), (4, "sad"), (5, "surprise"), (6, "neutral")],
)
def test_fer_csv_remaps_emotion_codes(tmp_path, code, name):
    (record,) = _read("fer2013-csv", _fer_csv(tmp_path / "f.csv", [f"{code},{PIXELS},Training"]))
    assert isinstance(record, Record)
    assert record.labels == {"emotion": EMOTION.index(name)}
    assert record.label("gender") == MISSING


def test_fer_csv_records(tmp_path):
    rows = [f"3,{PIXELS},Training", f"4,{PIXELS},PublicTest", f"6,{PIXELS},PrivateTest"]
    items = _read("fer2013-csv", _fer_csv(tmp_path / "f.csv", rows))
    assert [r.split for r in items] == ["train", "validation", "test"]
    assert [r.key for r in items] == ["line 2", "line 3", "line 4"]
    image = items[0].image
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (48, 48)
    assert image[0, 5] == 5 and image[47, 47] == (48 * 48 - 1) % 256  # row-major, values kept
    assert all(r.is_face_crop and r.source == "fer2013" for r in items)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (f"3,{' '.join(['1'] * 2303)},Training", "2303 pixels, expected 2304"),
        (f"3,{' '.join(['1'] * 2305)},Training", "2305 pixels"),
        (f"3,{' '.join(['1'] * 2303)} abc,Training", "not all integers"),
        (f"3,{' '.join(['1'] * 2303)} 256,Training", "outside 0..255"),
        (f"7,{PIXELS},Training", "unknown emotion code 7"),
        (f"x,{PIXELS},Training", "emotion 'x' is not an integer"),
        (f"3,{PIXELS},Holdout", "unknown Usage 'Holdout'"),
        (f"3,{PIXELS}", "missing value for column.*Usage"),
        (f",{PIXELS},Training", "missing value for column.*emotion"),
        (f"3,{PIXELS},Training,extra", "more field"),
    ],
)
def test_fer_csv_malformed_rows_are_rejected_with_reason_and_line(tmp_path, row, match):
    items = _read("fer2013-csv", _fer_csv(tmp_path / "f.csv", [f"0,{PIXELS},Training", row, f"1,{PIXELS},Training"]))
    assert len(items) == 3  # exactly one item per row; the good rows around it survive
    assert isinstance(items[0], Record) and isinstance(items[2], Record)
    reject = items[1]
    assert isinstance(reject, Reject) and reject.key == "line 3"
    assert re.search(match, reject.reason), reject.reason


@pytest.mark.parametrize(("header", "match"), [("emotion,pixels", r"lacks column\(s\) \['Usage'\]"), ("", "is empty")])
def test_fer_csv_bad_header_is_a_data_error(tmp_path, header, match):
    path = tmp_path / "f.csv"
    path.write_text(header + ("\n" if header else ""))
    with pytest.raises(DataError, match=match):
        _read("fer2013-csv", path)


# --- RAF-DB -------------------------------------------------------------------------------------

ANNOTATION = "40.1\t45.2\n60.3\t44.9\n50.0\t60.0\n42.0\t75.0\n58.0\t75.0\n1\n2\n3\n"


def _raf(
    root: Path,
    entries: list[tuple[str, str]],
    *,
    annotations: dict[str, str | None] | None = None,
    no_image: tuple[str, ...] = (),
) -> Path:
    """A RAF-DB basic folder: label lines `name label`, an image and annotation per name."""
    annotations = annotations or {}
    for sub in ("EmoLabel", "Image/aligned", "Annotation/manual"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel/list_patition_label.txt").write_text("".join(f"{n} {lab}\n" for n, lab in entries))
    for name, _ in entries:
        stem = name.rsplit(".", 1)[0]
        if name not in no_image:
            (root / "Image/aligned" / f"{stem}_aligned.jpg").write_bytes(f"jpeg:{stem}".encode())
        text = annotations.get(name, ANNOTATION)
        if text is not None:
            (root / "Annotation/manual" / f"{stem}_manu_attri.txt").write_text(text)
    return root


def test_rafdb_records(tmp_path):
    root = _raf(tmp_path / "basic", [("train_00001.jpg", "1"), ("test_0001.jpg", "7")])
    train, test = _read("rafdb", root)
    assert train.labels == {"emotion": 0, "gender": 1, "race": 2, "age": 3}  # label 1 = surprise
    assert test.labels["emotion"] == EMOTION.index("neutral")
    assert (train.split, test.split) == ("train", "test")  # 1 train entry: 10% of it rounds to 0
    assert train.image == b"jpeg:train_00001" and train.is_face_crop and train.key == "train_00001.jpg"
    # The parent of `basic/` works too.
    assert [r.key for r in _read("rafdb", tmp_path)] == ["train_00001.jpg", "test_0001.jpg"]


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (("train_00002.jpg", "8"), "unknown label 8"),
        (("train_00002.jpg", "0"), "unknown label 0"),
        (("train_00002.jpg", "happy"), "not an integer"),
        (("val_00002.jpg", "3"), "does not start with train_ or test_"),
        (("train_00001.jpg", "3"), "duplicate entry"),
    ],
)
def test_rafdb_bad_label_lines_are_rejected(tmp_path, line, match):
    items = _read("rafdb", _raf(tmp_path, [("train_00001.jpg", "4"), line]))
    assert len(items) == 2 and isinstance(items[0], Record)
    assert isinstance(items[1], Reject) and items[1].key == "list_patition_label.txt line 2"
    assert match in items[1].reason


def test_rafdb_missing_image_is_rejected(tmp_path):
    root = _raf(tmp_path, [("train_00001.jpg", "4"), ("train_00002.jpg", "5")], no_image=("train_00002.jpg",))
    record, reject = _read("rafdb", root)
    assert isinstance(record, Record) and isinstance(reject, Reject)
    assert "Image/aligned/train_00002_aligned.jpg is missing" in reject.reason


@pytest.mark.parametrize(
    ("annotation", "why"),
    [
        (None, "annotation file missing"),
        ("1\t2\n" * 5 + "0\n1\n", "7 non-empty lines"),
        ("1\t2\n" * 5 + "5\n1\n2\n", "gender code 5"),
        ("1\t2\n" * 5 + "0\n1\n9\n", "age code 9"),
        ("1\t2\n" * 4 + "oops\n0\n1\n2\n", "landmark line 5"),
    ],
)
def test_rafdb_bad_annotation_keeps_emotion_and_notes_it(tmp_path, annotation, why):
    root = _raf(
        tmp_path, [("train_00001.jpg", "4"), ("test_00001.jpg", "2")], annotations={"train_00001.jpg": annotation}
    )
    notes: list[str] = []
    kept, other = _read("rafdb", root, notes=notes)
    assert kept.labels == {"emotion": 3}
    assert kept.label_vector() == (3, MISSING, MISSING, MISSING)
    assert other.labels["gender"] == 1  # the other record keeps its attributes
    assert len(notes) == 1 and notes[0].startswith("1 record(s) kept with emotion only") and why in notes[0]


def _raf_stratified(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    entries, label_of = [], {}
    for label in range(1, 8):
        for j in range(20 * label):  # 20, 40, ... 140 per class: unbalanced on purpose
            name = f"train_{label}{j:04d}.jpg"
            entries.append((name, str(label)))
            label_of[name] = label - 1
    entries += [(f"test_{j:04d}.jpg", str(j % 7 + 1)) for j in range(30)]
    return _raf(tmp_path, entries), label_of


def test_rafdb_validation_is_a_seeded_stratified_tenth_of_train(tmp_path):
    root, label_of = _raf_stratified(tmp_path)
    items = _read("rafdb", root, seed=3)
    val = Counter(r.labels["emotion"] for r in items if r.split == "validation")
    train = Counter(r.labels["emotion"] for r in items if r.split == "train")
    for cls in range(7):
        n = 20 * (cls + 1)
        assert val[cls] == round(0.1 * n) and train[cls] + val[cls] == n  # 10% of each class
    assert all(r.split == "test" for r in items if r.key.startswith("test_"))
    val_keys = {r.key for r in items if r.split == "validation"}
    assert val_keys == {r.key for r in _read("rafdb", root, seed=3) if r.split == "validation"}
    assert val_keys != {r.key for r in _read("rafdb", root, seed=4) if r.split == "validation"}


def test_stratified_validation_helper_is_order_independent():
    entries = [(f"k{i}", i % 3) for i in range(90)]
    chosen = stratified_validation(entries, fraction=0.2, seed=1)
    assert chosen == stratified_validation(entries[::-1], fraction=0.2, seed=1)
    assert Counter(int(k[1:]) % 3 for k in chosen) == {0: 6, 1: 6, 2: 6}


def test_rafdb_paper_split_is_random_90_10_of_everything(tmp_path):
    root, _ = _raf_stratified(tmp_path)
    items = _read("rafdb", root, seed=0, split_mode="paper")
    splits = Counter(r.split for r in items)
    assert set(splits) == {"train", "validation"} and splits["validation"] == round(0.1 * len(items))
    assert any(r.split == "validation" and r.key.startswith("test_") for r in items)


def test_rafdb_without_label_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="list_patition_label.txt"):
        _read("rafdb", tmp_path)


# --- emotion folders ----------------------------------------------------------------------------


def _files(root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode())
    return root


def test_folder_flat_layout(tmp_path):
    names = [f"happy/{i}.jpg" for i in range(300)] + ["Sadness/a.PNG", "bored/x.jpg", "angry/notes.txt", "top.jpg"]
    root = _files(tmp_path / "imgs", [*names, ".DS_Store", "angry/.hidden.jpg"])
    items = _read("folder", root, seed=1)
    assert len(items) == len(names)  # hidden files are not inputs; everything else is one item
    records = {r.key: r for r in _records(items)}
    assert records["Sadness/a.PNG"].labels == {"emotion": EMOTION.index("sad")}
    assert not records["Sadness/a.PNG"].is_face_crop and records["happy/0.jpg"].image == b"happy/0.jpg"
    reasons = {r.key: r.reason for r in _rejects(items)}
    assert set(reasons) == {"bored/x.jpg", "angry/notes.txt", "top.jpg"}
    assert "unknown emotion folder 'bored'" in reasons["bored/x.jpg"]
    assert "not an image file" in reasons["angry/notes.txt"]
    assert "<emotion>/<file>" in reasons["top.jpg"]
    splits = Counter(r.split for r in _records(items))
    assert 210 <= splits["train"] <= 270 and splits["validation"] >= 15 and splits["test"] >= 15  # ~80/10/10
    again = {r.key: r.split for r in _records(_read("folder", root, seed=1))}
    other = {r.key: r.split for r in _records(_read("folder", root, seed=2))}
    assert again == {k: r.split for k, r in records.items()} and other != again


def test_folder_split_layout(tmp_path):
    names = ["train/happy/a.jpg", "validation/fear/b.jpg", "test/neutral/c.jpeg", "extra/happy/d.jpg"]
    items = _read("folder", _files(tmp_path, names))
    by_key = {i.key: i for i in items}
    assert by_key["train/happy/a.jpg"].split == "train" and by_key["validation/fear/b.jpg"].split == "validation"
    assert by_key["test/neutral/c.jpeg"].split == "test"
    assert (
        isinstance(by_key["extra/happy/d.jpg"], Reject)
        and "<split>/<emotion>/<file>" in by_key["extra/happy/d.jpg"].reason
    )


def test_fer2013_folder_prefixes_must_agree_with_folder(tmp_path):
    names = [
        "train/angry/Training_1.jpg",
        "validation/happy/PublicTest_2.jpg",
        "test/sad/PrivateTest_3.jpg",
        "train/surprise/im4.png",
        "train/fear/PublicTest_5.jpg",
        "validation/neutral/PrivateTest_6.jpg",
        "test/disgust/Training_7.jpg",
    ]
    items = _read("fer2013-folder", _files(tmp_path, names))
    assert len(items) == len(names)
    records = {r.key: r for r in _records(items)}
    assert [records[k].split for k in names[:4]] == ["train", "validation", "test", "train"]
    assert records[names[0]].labels == {"emotion": EMOTION.index("angry")} and records[names[0]].is_face_crop
    reasons = {r.key: r.reason for r in _rejects(items)}
    assert set(reasons) == set(names[4:])
    assert "prefix 'PublicTest_' means split 'validation' but the file is in the 'train' folder" in reasons[names[4]]


def _holdout_splits(kind: str, tmp_path: Path, seed: int) -> dict[str, str]:
    if kind == "fer2013-folder":
        names = [f"train/happy/Training_{i}.jpg" for i in range(400)] + ["validation/sad/PublicTest_1.jpg"]
        root = _files(tmp_path / kind, names)
    else:
        rows = [f"3,{PIXELS},Training"] * 400 + [f"4,{PIXELS},PublicTest", f"4,{PIXELS},PrivateTest"]
        tmp_path.mkdir(parents=True, exist_ok=True)
        root = _fer_csv(tmp_path / "f.csv", rows)
    return {r.key: r.split for r in _records(_read(kind, root, seed=seed, split_mode="holdout"))}


@pytest.mark.parametrize("kind", ["fer2013-folder", "fer2013-csv"])
def test_fer2013_holdout_mode_keeps_public_test_unseen(tmp_path, kind):
    splits = _holdout_splits(kind, tmp_path, seed=0)
    held_out = "validation/sad/PublicTest_1.jpg" if kind == "fer2013-folder" else "line 402"
    assert splits[held_out] == "test"  # PublicTest is reported on, never early-stopped on
    counts = Counter(splits.values())
    assert 20 <= counts["validation"] <= 60  # a seeded ~10% of Training
    assert counts["train"] + counts["validation"] == 400
    assert _holdout_splits(kind, tmp_path / "again", seed=0) == splits
    assert _holdout_splits(kind, tmp_path / "other", seed=1) != splits


def test_fer2013_folder_needs_split_folders(tmp_path):
    with pytest.raises(DataError, match="no train/, validation/ or test/"):
        _read("fer2013-folder", _files(tmp_path, ["happy/a.jpg"]))


# --- UTKFace ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "bin_"), [(0, 0), (3, 0), (4, 1), (19, 1), (20, 2), (39, 2), (40, 3), (69, 3), (70, 4), (116, 4)]
)
def test_utkface_age_bins(tmp_path, age, bin_):
    (record,) = _read("utkface", _files(tmp_path, [f"{age}_1_2_20170116174525125.jpg.chip.jpg"]))
    assert record.labels == {"age": bin_, "gender": 1, "race": RACE.index("asian")}
    assert record.label("emotion") == MISSING and record.is_face_crop


@pytest.mark.parametrize(("code", "race"), [(0, 0), (1, 1), (2, 2), (3, MISSING), (4, MISSING)])
def test_utkface_race_codes(tmp_path, code, race):
    notes: list[str] = []
    (record,) = _read("utkface", _files(tmp_path, [f"30_0_{code}_20170116174525125.jpg.chip.jpg"]), notes=notes)
    assert record.label("race") == race and record.label("gender") == 0
    assert bool(notes) == (race == MISSING)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("39_1_20170116174525125.jpg.chip.jpg", "3 underscore-separated fields"),
        ("61_1_20170109150557335.jpg.chip.jpg", "3 underscore-separated fields"),
        ("a_0_0_20170116174525125.jpg.chip.jpg", "non-numeric"),
        ("30_2_0_20170116174525125.jpg.chip.jpg", "gender code 2"),
        ("30_0_5_20170116174525125.jpg.chip.jpg", "race code 5"),
        ("300_0_0_20170116174525125.jpg.chip.jpg", "age 300"),
        ("README.txt", "not a UTKFace image name"),
    ],
)
def test_utkface_malformed_names_are_rejected(tmp_path, name, match):
    items = _read("utkface", _files(tmp_path, [name, "25_0_0_20170116174525125.jpg.chip.jpg"]))
    assert len(items) == 2
    (reject,) = _rejects(items)
    assert reject.key == name and match in reject.reason


def test_utkface_hash_split_is_seeded(tmp_path):
    names = [f"{20 + i % 50}_{i % 2}_{i % 5}_2017011617452{i:04d}.jpg.chip.jpg" for i in range(400)]
    root = _files(tmp_path, names)
    first = {r.key: r.split for r in _read("utkface", root, seed=0)}
    assert first == {r.key: r.split for r in _read("utkface", root, seed=0)}
    assert first != {r.key: r.split for r in _read("utkface", root, seed=1)}
    counts = Counter(first.values())
    assert 290 <= counts["train"] <= 350 and counts["validation"] >= 20 and counts["test"] >= 20
