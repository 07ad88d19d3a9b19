"""RAF-DB "basic" layout: emotion labels, aligned 100x100 faces and manual attribute annotations.

    EmoLabel/list_patition_label.txt       `train_00001.jpg 5` (labels 1..7 in tasks.EMOTION order)
    Image/aligned/train_00001_aligned.jpg
    Annotation/manual/train_00001_manu_attri.txt   5 landmark lines `x<TAB>y` (1 and 2 the eyes),
                                                   then gender, race, age codes, one per line

`train_*` files are train, `test_*` test; validation is a seeded, emotion-stratified 10% of train
("official" split mode). The "paper" mode is the paper's random 90/10 train/validation split of all
files, with no test split.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer_model.errors import DataError
from fer_model.readers._common import check_split_mode, read_inside, refuse_path, shown
from fer_model.records import Record, Reject, Split
from fer_model.tasks import AGE, EMOTION, GENDER, RACE

logger = logging.getLogger(__name__)

LABEL_FILE = Path("EmoLabel/list_patition_label.txt")
IMAGE_DIR = Path("Image/aligned")
ANNOTATION_DIR = Path("Annotation/manual")
VALIDATION_FRACTION = 0.1
_MAX_NOTED = 20  # examples listed in the note about records kept without attributes


@dataclass(frozen=True)
class _Entry:
    line: int
    name: str
    emotion: int
    prefix: str  # "train" or "test"

    @property
    def stem(self) -> str:
        return self.name.rsplit(".", 1)[0]


def find_root(path: Path) -> Path:
    """The folder holding EmoLabel/; accepts the dataset's `basic/` folder or its parent."""
    for root in (path, path / "basic"):
        if (root / LABEL_FILE).is_file():
            return root
    raise DataError(f"RAF-DB source {path} has no {LABEL_FILE}; pass the RAF-DB `basic` folder")


def _parse_label_line(line_no: int, text: str) -> _Entry | str:
    fields = text.split()
    if len(fields) != 2:
        return f"expected `<file name> <label>`, got {shown(text.strip())}"
    name, label_text = fields
    if any(c in name for c in "/\\\0"):  # the name becomes part of a path: no way out of the image folder
        return f"file name {shown(name)} must be a plain file name, without '/', '\\' or NUL"
    prefix = name.split("_", 1)[0]
    if prefix not in ("train", "test") or "_" not in name:
        return f"file name {shown(name)} does not start with train_ or test_"
    try:
        label = int(label_text)
    except ValueError:
        return f"label {shown(label_text)} is not an integer"
    if not 1 <= label <= EMOTION.num_classes:
        return f"unknown label {label}; expected 1..{EMOTION.num_classes}"
    return _Entry(line_no, name, label - 1, prefix)


def parse_annotation(text: str) -> dict[str, int] | str:
    """{gender, race, age} from a manu_attri file, or the reason it is unusable."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 8:
        return f"{len(lines)} non-empty lines, expected 5 landmarks + gender, race, age"
    for i, line in enumerate(lines[:5], start=1):
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            [float(p) for p in parts]
        except ValueError:
            return f"landmark line {i} {shown(line)} is not `x<TAB>y`"
    labels: dict[str, int] = {}
    for task, line in zip((GENDER, RACE, AGE), lines[5:8], strict=True):
        try:
            value = int(line)
        except ValueError:
            return f"{task.name} {shown(line)} is not an integer"
        if not 0 <= value < task.num_classes:
            return f"{task.name} code {value} outside 0..{task.num_classes - 1}"
        labels[task.name] = value
    return labels


def _read_annotation(root: Path, entry: _Entry) -> dict[str, int] | str:
    """{gender, race, age} of an entry, or why they are unknown (file missing, refused or malformed)."""
    annotation = root / ANNOTATION_DIR / f"{entry.stem}_manu_attri.txt"
    if not annotation.exists() and not annotation.is_symlink():
        return "annotation file missing"
    content = read_inside(root, annotation)
    if isinstance(content, str):
        return f"annotation file {content}"
    return parse_annotation(content.decode("utf-8", errors="replace"))


def stratified_validation(entries: Sequence[tuple[str, int]], *, fraction: float, seed: int) -> set[str]:
    """Keys of a seeded `fraction` of `entries` (key, class), taken class by class so that every
    class keeps its share in both parts."""
    by_class: dict[int, list[str]] = defaultdict(list)
    for key, label in entries:
        by_class[label].append(key)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        take = int(round(fraction * len(keys)))
        chosen.update(keys[i] for i in rng.permutation(len(keys))[:take])
    return chosen


def _assign_splits(entries: Sequence[_Entry], *, seed: int, split_mode: str) -> dict[str, Split]:
    if split_mode == "paper":
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(entries))
        n_val = int(round(VALIDATION_FRACTION * len(entries)))
        val = {entries[i].name for i in order[:n_val]}
        return {e.name: ("validation" if e.name in val else "train") for e in entries}
    train = [(e.name, e.emotion) for e in entries if e.prefix == "train"]
    val = stratified_validation(train, fraction=VALIDATION_FRACTION, seed=seed)
    return {e.name: ("test" if e.prefix == "test" else "validation" if e.name in val else "train") for e in entries}


def read_rafdb(
    path: Path,
    *,
    source: str = "rafdb",
    seed: int = 0,
    split_mode: str = "official",
    notes: list[str] | None = None,
) -> Iterator[Record | Reject]:
    """Yield one Record (aligned JPEG bytes, emotion + gender/race/age) or Reject per label-file line.

    A missing image or a bad label line is a Reject. A missing or malformed annotation keeps the
    record with emotion only; a note in `notes` counts such records and names some of them.

    Raises:
        DataError: the folder has no label file. ConfigError: unknown `split_mode`.
    """
    check_split_mode(split_mode)
    root = find_root(path)
    if why := refuse_path(root, root / LABEL_FILE):
        raise DataError(f"RAF-DB label file {root / LABEL_FILE}: {why}")
    lines = (root / LABEL_FILE).read_text(encoding="utf-8", errors="replace").splitlines()

    # First pass: parse every line, so the validation split can be drawn per emotion class
    # over the entries that will actually become records.
    parsed: list[tuple[int, _Entry | str]] = []
    seen: Counter[str] = Counter()
    for line_no, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        entry = _parse_label_line(line_no, text)
        if isinstance(entry, _Entry):
            seen[entry.name] += 1
            if seen[entry.name] > 1:
                entry = f"duplicate entry for {entry.name}"
            elif not (root / IMAGE_DIR / f"{entry.stem}_aligned.jpg").exists():
                entry = f"image {IMAGE_DIR / f'{entry.stem}_aligned.jpg'} is missing"
            elif why := refuse_path(root, root / IMAGE_DIR / f"{entry.stem}_aligned.jpg"):
                entry = f"image {IMAGE_DIR / f'{entry.stem}_aligned.jpg'}: {why}"
        parsed.append((line_no, entry))
    splits = _assign_splits([e for _, e in parsed if isinstance(e, _Entry)], seed=seed, split_mode=split_mode)

    unlabelled: list[str] = []
    for line_no, entry in parsed:
        if isinstance(entry, str):
            yield Reject(source, f"{LABEL_FILE.name} line {line_no}", entry)
            continue
        labels: dict[str, int] = {"emotion": entry.emotion}
        image = read_inside(root, root / IMAGE_DIR / f"{entry.stem}_aligned.jpg")
        if isinstance(image, str):
            yield Reject(source, f"{LABEL_FILE.name} line {line_no}", f"image {entry.stem}_aligned.jpg: {image}")
            continue
        attributes = _read_annotation(root, entry)
        if isinstance(attributes, str):
            unlabelled.append(f"{entry.name} ({attributes})")
        else:
            labels.update(attributes)
        yield Record(source, entry.name, image, labels, splits[entry.name], is_face_crop=True)

    if unlabelled:
        shown = "; ".join(unlabelled[:_MAX_NOTED]) + (" ..." if len(unlabelled) > _MAX_NOTED else "")
        message = f"{len(unlabelled)} record(s) kept with emotion only, gender/race/age unlabelled: {shown}"
        logger.warning("%s: %s", source, message)
        if notes is not None:
            notes.append(message)
