"""fer_model.source_fingerprint: local files by size and mtime, gs:// objects by generation (emulator)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fer_model.errors import ConfigError
from fer_model.source_fingerprint import fingerprint_sources
from tests.test_storage import bucket, emulator_url  # noqa: F401 - the GCS emulator fixtures


def _touch_later(path: Path, text: str) -> None:
    """Rewrite `path` with `text` and move its mtime forward, as a later upload or copy would."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.fixture()
def raf(tmp_path: Path) -> Path:
    root = tmp_path / "raf" / "basic"
    (root / "Image" / "aligned").mkdir(parents=True)
    for name in ("train_00001.jpg", "test_0001.jpg"):
        (root / "Image" / "aligned" / name).write_bytes(b"\xff\xd8" + name.encode())
    (root / "EmoLabel").mkdir()
    (root / "EmoLabel" / "list_patition_label.txt").write_text("train_00001.jpg 1\ntest_0001.jpg 4\n")
    return root


def test_fingerprint_is_stable_while_nothing_changes(raf: Path, tmp_path: Path) -> None:
    csv = tmp_path / "fer2013.csv"
    csv.write_text("emotion,pixels,Usage\n")
    sources = f"rafdb:{raf},fer2013-csv:{csv}"
    first = fingerprint_sources(sources)
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 16
    assert fingerprint_sources(sources) == first
    assert fingerprint_sources([f" rafdb:{raf}", f"fer2013-csv:{csv} "]) == first


@pytest.mark.parametrize("change", ["rewrite", "add", "remove"])
def test_fingerprint_changes_with_the_files_of_a_folder(raf: Path, change: str) -> None:
    before = fingerprint_sources(f"rafdb:{raf}")
    labels = raf / "EmoLabel" / "list_patition_label.txt"
    if change == "rewrite":  # same size, new content: the mtime tells
        _touch_later(labels, labels.read_text().replace("1\n", "2\n"))
    elif change == "add":
        (raf / "Image" / "aligned" / "train_00002.jpg").write_bytes(b"\xff\xd8")
    else:
        (raf / "Image" / "aligned" / "test_0001.jpg").unlink()
    assert fingerprint_sources(f"rafdb:{raf}") != before


def test_fingerprint_depends_on_the_kind_and_the_location(raf: Path) -> None:
    assert fingerprint_sources(f"rafdb:{raf}") != fingerprint_sources(f"folder:{raf}")


def test_a_path_not_on_this_machine_keys_on_the_path(tmp_path: Path) -> None:
    missing = f"rafdb:{tmp_path / 'mounted-in-the-pod'}"
    assert fingerprint_sources(missing) == fingerprint_sources(missing) != fingerprint_sources(missing + "2")


def test_no_sources_no_fingerprint() -> None:
    assert fingerprint_sources(" , ") == ""


def test_a_malformed_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must look like KIND:PATH"):
        fingerprint_sources("no-kind-here")


def test_gcs_fingerprint_follows_object_generations(bucket: str) -> None:  # noqa: F811 - fixture
    from google.cloud import storage as gcs

    blob = gcs.Client().bucket(bucket).blob("data/fer2013.csv")
    blob.upload_from_string("emotion,pixels,Usage\n")
    gcs.Client().bucket(bucket).blob("raf/basic/EmoLabel/list.txt").upload_from_string("a 1\n")
    sources = f"fer2013-csv:gs://{bucket}/data/fer2013.csv,rafdb:gs://{bucket}/raf/basic"
    first = fingerprint_sources(sources)
    assert fingerprint_sources(sources) == first
    # The same bytes uploaded again are a new generation: new data at the same URI, a new key.
    blob.upload_from_string("emotion,pixels,Usage\n")
    second = fingerprint_sources(sources)
    assert second != first
    gcs.Client().bucket(bucket).blob("raf/basic/EmoLabel/more.txt").upload_from_string("b 2\n")
    assert fingerprint_sources(sources) != second
