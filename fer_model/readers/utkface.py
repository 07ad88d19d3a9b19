"""UTKFace aligned and cropped faces, labelled by file name: `<age>_<gender>_<race>_<datetime>.jpg.chip.jpg`.

Gender 0 male, 1 female. Race 0 White, 1 Black, 2 Asian map to caucasian, african_american, asian;
3 (Indian) and 4 (Others) have no class in our race task and are left unlabelled for race (the
image still teaches age and gender). Age in years goes to `tasks.age_to_bin`. No emotion labels.
The split is a seeded hash of the file name (80/10/10).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from fer_model.readers._common import hash_split, iter_files, read_inside, require_dir
from fer_model.records import Record, Reject
from fer_model.tasks import MISSING, RACE, age_to_bin

logger = logging.getLogger(__name__)

_SUFFIX = re.compile(r"\.jpg(\.chip\.jpg)?$", re.IGNORECASE)
#: UTKFace race code -> our race index (codes 3 and 4 have none).
UTK_RACE: dict[int, int] = {
    0: RACE.index("caucasian"),
    1: RACE.index("african_american"),
    2: RACE.index("asian"),
    3: MISSING,
    4: MISSING,
}
MAX_AGE = 130  # UTKFace's oldest is 116; a larger number is a corrupt name


def parse_name(name: str) -> dict[str, int] | str:
    """{age, gender, race} labels from a UTKFace file name, or the reason it is malformed."""
    match = _SUFFIX.search(name)
    if not match:
        return "not a UTKFace image name (expected <age>_<gender>_<race>_<datetime>.jpg.chip.jpg)"
    fields = name[: match.start()].split("_")
    if len(fields) != 4:
        return f"{len(fields)} underscore-separated fields, expected 4: <age>_<gender>_<race>_<datetime>"
    if not all(f.isascii() and f.isdigit() for f in fields):  # isdigit alone takes "²", which int() refuses
        return f"non-numeric field in {fields}; expected <age>_<gender>_<race>_<datetime> digits"
    age, gender, race = (int(f) for f in fields[:3])
    if age > MAX_AGE:
        return f"age {age} above {MAX_AGE}"
    if gender not in (0, 1):
        return f"gender code {gender}; expected 0 (male) or 1 (female)"
    if race not in UTK_RACE:
        return f"race code {race}; expected 0..4"
    return {"age": age_to_bin(age), "gender": gender, "race": UTK_RACE[race]}


def read_utkface(
    path: Path,
    *,
    source: str = "utkface",
    seed: int = 0,
    split_mode: str = "official",
    notes: list[str] | None = None,
) -> Iterator[Record | Reject]:
    """Yield one Record (JPEG bytes; age, gender, race where known; face crop) or Reject per file,
    walking `path` recursively (UTKFace ships in part1/part2/part3 folders too)."""
    del split_mode  # UTKFace has no official split; the hash split serves both modes
    require_dir(path, kind="utkface")
    unlabelled_race: Counter[int] = Counter()
    for file in iter_files(path):
        key = file.relative_to(path).as_posix()
        labels = parse_name(file.name)
        if isinstance(labels, str):
            yield Reject(source, key, labels)
            continue
        data = read_inside(path, file)
        if isinstance(data, str):
            yield Reject(source, key, data)
            continue
        if labels["race"] == MISSING:
            unlabelled_race[int(file.name.split("_")[2])] += 1
        yield Record(source, key, data, labels, hash_split(file.name, seed), is_face_crop=True)
    if unlabelled_race and notes is not None:
        notes.append(
            f"{sum(unlabelled_race.values())} record(s) with UTKFace race 3 (Indian) or 4 (Others) left unlabelled "
            f"for race: {dict(sorted(unlabelled_race.items()))}"
        )
