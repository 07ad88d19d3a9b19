"""prepare_dataset and the `prepare` / `sample-data` commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

import fer_model.prepare as prepare_module
from fer_cli import main
from fer_model.alignment import AlignConfig
from fer_model.dataset import load_dataset
from fer_model.errors import ConfigError, DataError
from fer_model.prepare import prepare_dataset
from fer_model.readers import SourceSpec
from fer_model.sample_data import _Face as Face
from fer_model.sample_data import render_face, write_sample_data
from fer_model.tasks import MISSING, TASK_NAMES
from tests._fixtures.datasets import SAMPLE_N

PIXELS = " ".join(["128"] * (48 * 48))


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory) -> dict:
    """28 faces (14 FER2013 rows + 4 bad ones, 14 RAF-DB images + 1 corrupt)."""
    return write_sample_data(tmp_path_factory.mktemp("small"), n=28, seed=1)


def test_sample_dataset_manifest_lists_rejects_and_counts_add_up(sample_dataset_dir):
    dataset = load_dataset(sample_dataset_dir)
    manifest = dataset.manifest
    sources = {s["name"]: s for s in manifest["sources"]}
    assert set(sources) == {"fer2013", "rafdb"}
    for s in sources.values():
        assert s["records"] + s["rejects"] == s["inputs"]
        assert sum(s["splits"].values()) == s["records"]
    assert sources["fer2013"]["inputs"] == SAMPLE_N // 2 + 4  # 4 malformed rows
    assert sources["rafdb"]["inputs"] == SAMPLE_N - SAMPLE_N // 2 + 1  # 1 corrupt image
    assert len(dataset) == SAMPLE_N == sum(s["records"] for s in sources.values())
    assert manifest["num_inputs"] == len(dataset) + manifest["num_rejects"]
    rejects = manifest["rejects"]
    assert len(rejects) == 5 and all(r["reason"] and r["key"] for r in rejects)
    assert [r["source"] for r in rejects].count("fer2013") == 4
    (corrupt,) = [r for r in rejects if r["source"] == "rafdb"]
    assert corrupt["reason"].startswith("undecodable image:")
    assert dataset.images.shape == (SAMPLE_N, 50, 50)


def test_sample_dataset_labels_and_alignment_stats(sample_dataset_dir):
    dataset = load_dataset(sample_dataset_dir)
    fer = slice(0, SAMPLE_N // 2)  # sources are written in order: FER2013 rows first
    assert (dataset.labels["gender"][fer] == MISSING).all() and (dataset.labels["emotion"][fer] >= 0).all()
    assert (dataset.labels["age"][SAMPLE_N // 2 :] >= 0).all()
    stats = dataset.manifest["alignment"]
    assert stats["config"] == AlignConfig().to_dict()
    for name, s in stats["per_source"].items():
        assert s["eyes_found"] >= 0.9 * s["aligned"], name  # synthetic eyes are Haar-friendly
        assert sum(s["rotation_histogram"]["counts"]) == s["eyes_found"]
        assert s["eyes_not_found_kept"] == s["aligned"] - s["eyes_found"]
    assert stats["per_source"]["rafdb"]["errors"] == 1


def test_chunked_streaming_and_limit(small_sample, tmp_path):
    whole = load_dataset(prepare_dataset(sources=small_sample["sources"], out_dir=tmp_path / "a"))
    chunked = load_dataset(prepare_dataset(sources=small_sample["sources"], out_dir=tmp_path / "b", chunk_size=4))
    assert np.array_equal(whole.images, chunked.images) and np.array_equal(whole.split, chunked.split)
    assert all(np.array_equal(whole.labels[t], chunked.labels[t]) for t in TASK_NAMES)
    limited = prepare_dataset(sources=small_sample["sources"], out_dir=tmp_path / "c", limit=10)
    assert [s["inputs"] for s in load_dataset(limited).manifest["sources"]] == [10, 10]


@pytest.mark.parametrize("workers", [1, 2])
def test_alignment_reports_progress_with_counts_rate_and_eta(small_sample, tmp_path, caplog, workers):
    caplog.set_level(logging.INFO, logger="fer_model.prepare")
    out = prepare_dataset(sources=small_sample["sources"], out_dir=tmp_path / "ds", limit=10, chunk_size=4,
                          workers=workers, progress_every_s=0)
    progress = [r for r in caplog.records if r.name == "fer_model.prepare" and hasattr(r, "done")]
    for source in load_dataset(out).manifest["sources"]:
        lines = [r for r in progress if r.getMessage().startswith(f"{source['name']}: aligned ")]
        *during, final = lines
        counts = [r.done for r in during]
        # In-process every image moves the count; with workers each finished chunk (at most 4) does.
        assert counts == sorted(set(counts)) and counts[-1] == final.done
        assert max(b - a for a, b in zip([0, *counts], counts, strict=False)) <= (1 if workers == 1 else 4)
        assert source["records"] <= final.done <= source["inputs"] <= 10
        assert all(r.total == 10 and r.rate > 0 for r in lines)
        assert all(r.eta_s is not None and r.eta_s >= 0 for r in during) and final.eta_s is None


def test_workers_give_the_same_dataset(small_sample, tmp_path):
    one = load_dataset(prepare_dataset(sources=small_sample["sources"], out_dir=tmp_path / "a", workers=1))
    # Chunks of 4: several in flight in turn, each read while the one before is aligned.
    two = load_dataset(prepare_dataset(sources=small_sample["sources"], out_dir=tmp_path / "b", workers=2,
                                       chunk_size=4))
    assert np.array_equal(one.images, two.images)
    assert one.manifest["rejects"] == two.manifest["rejects"]


class _RecordingPool:
    """Stands in for AlignPool: logs when each chunk is handed over and when its results are taken."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def submit(self, images, *, is_face_crop):
        n = sum("submit" in e for e in self.log) + 1
        self.log.append(f"submit {n}")
        pool = self

        class Job:
            def results(self, progress):
                pool.log.append(f"results {n}")
                return [prepare_module.AlignResult.failed("undecodable") for _ in images]

        return Job()


def test_each_chunk_is_handed_over_before_the_previous_one_is_collected(small_sample, tmp_path):
    from fer_model.progress import Progress
    from fer_model.readers import read_source

    spec = SourceSpec.parse(small_sample["sources"][0])
    run = prepare_module._SourceRun(spec=spec, local_path=Path(spec.path), progress=Progress("t", every_s=1e9))
    pool = _RecordingPool()
    prepare_module._read_and_align(run, read_source(spec), pool=pool, chunk_size=4)
    chunks = sum("submit" in e for e in pool.log)
    assert chunks >= 3
    # Reading chunk n+1 overlaps aligning chunk n: n+1 is handed over before n is waited for.
    expected = ["submit 1"] + [e for n in range(2, chunks + 1) for e in (f"submit {n}", f"results {n - 1}")]
    assert pool.log == [*expected, f"results {chunks}"]
    # Every record was aligned once; the rest are the reader's own rejects.
    reader_rejects = sum(not r.reason.startswith("undecodable image") for r in run.rejects)
    assert len(run.all_results) + reader_rejects == run.inputs


def test_no_eye_alignment_and_paper_split(small_sample, tmp_path):
    out = prepare_dataset(
        sources=small_sample["sources"],
        out_dir=tmp_path / "d",
        align=AlignConfig(eye_alignment=False),
        split_mode="paper",
    )
    manifest = load_dataset(out).manifest
    assert all(s["eyes_found"] == 0 for s in manifest["alignment"]["per_source"].values())
    rafdb = next(s for s in manifest["sources"] if s["name"] == "rafdb")
    assert rafdb["splits"]["test"] == 0 and rafdb["splits"]["validation"] > 0


def _jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_full_images_without_a_face_are_rejected(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos" / "happy"
    root.mkdir(parents=True)
    for i in range(6):
        face, _ = render_face(Face("happy", "female", "asian", "20-39"), rng, size=100, gray=False)
        canvas = np.full((240, 320, 3), 120, np.uint8)
        canvas[60:160, 110:210] = face
        (root / f"face{i}.jpg").write_bytes(_jpeg(canvas))
    (root / "blank.jpg").write_bytes(_jpeg(np.full((240, 320, 3), 90, np.uint8)))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    manifest = load_dataset(
        prepare_dataset(sources=[f"folder:{tmp_path / 'photos'}"], out_dir=tmp_path / "ds")
    ).manifest
    reasons = {r["key"]: r["reason"] for r in manifest["rejects"]}
    assert reasons["happy/blank.jpg"] == "no face found"
    assert reasons["happy/broken.jpg"].startswith("undecodable image:")
    (source,) = manifest["sources"]
    assert source["records"] >= 3 and source["records"] + source["rejects"] == source["inputs"] == 8


def test_source_without_usable_records_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(f"emotion,pixels,Usage\n9,{PIXELS},Training\n3,1 2 3,Training\n")
    with pytest.raises(DataError, match=r"fer2013-csv:.*no usable records \(2 inputs, 2 rejected"):
        prepare_dataset(sources=[f"fer2013-csv:{bad}"], out_dir=tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"sources": []}, ConfigError, "`sources` is empty"),
        ({"workers": 0}, ConfigError, "`workers` must be >= 1"),
        ({"limit": 0}, ConfigError, "`limit` must be >= 1"),
        ({"progress_every_s": -1}, ConfigError, "`progress_every_s` must be >= 0 seconds, got -1"),
        ({"split_mode": "random"}, ConfigError, "split_mode"),
        ({"sources": ["utkface"]}, ConfigError, "KIND:PATH"),
    ],
)
def test_bad_arguments(small_sample, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        prepare_dataset(**{"sources": small_sample["sources"], "out_dir": tmp_path / "x", **kwargs})


def test_remote_sources_go_through_local_source(small_sample, tmp_path, monkeypatch):
    local = Path(small_sample["rafdb_dir"])
    calls = []

    def fake_local_source(uri):
        calls.append(uri)
        return local if uri == "gs://bucket/rafdb" else Path(uri)

    monkeypatch.setattr(prepare_module, "local_source", fake_local_source)
    specs = [SourceSpec("rafdb", "gs://bucket/rafdb"), SourceSpec("rafdb", str(local))]
    manifest = load_dataset(prepare_dataset(sources=specs, out_dir=tmp_path / "ds")).manifest
    assert calls == ["gs://bucket/rafdb", str(local)]
    assert [(s["name"], s["path"]) for s in manifest["sources"]] == [
        ("rafdb", "gs://bucket/rafdb"),
        ("rafdb-2", str(local)),
    ]
    assert {r["source"] for r in manifest["rejects"]} == {"rafdb", "rafdb-2"}


# --- CLI ----------------------------------------------------------------------------------------


def test_cli_sample_data_then_prepare(tmp_path, capsys):
    assert main(["sample-data", "--out", str(tmp_path / "raw"), "--n", "14", "--seed", "2"]) == 0
    assert "prepare with: fer-mtl prepare --source fer2013-csv:" in capsys.readouterr().out
    args = ["prepare", "--out", str(tmp_path / "ds"), "--no-eye-alignment", "--limit", "9"]
    args += ["--source", f"fer2013-csv:{tmp_path / 'raw/fer2013.csv'}", "--source", f"rafdb:{tmp_path / 'raw/rafdb'}"]
    assert main(args) == 0
    manifest = json.loads((tmp_path / "ds/manifest.json").read_text())
    assert manifest["alignment"]["config"]["eye_alignment"] is False
    assert [s["inputs"] for s in manifest["sources"]] == [9, 8]  # 7 RAF-DB faces + the corrupt one
    assert f"dataset: {tmp_path / 'ds'} ({manifest['num_samples']} samples" in capsys.readouterr().out


def test_crop_eyes_setting_is_recorded_in_the_manifest(small_sample, tmp_path, capsys):
    args = ["prepare", "--out", str(tmp_path / "ds"), "--limit", "6", "--crop-eyes", "blazeface",
            "--source", small_sample["sources"][0]]
    assert main(args) == 0
    config = json.loads((tmp_path / "ds/manifest.json").read_text())["alignment"]["config"]
    assert config["crop_eyes"] == "blazeface"
    assert AlignConfig.from_dict(config) == AlignConfig(crop_eyes="blazeface")
    with pytest.raises(SystemExit):
        main(["prepare", "--out", str(tmp_path / "x"), "--source", small_sample["sources"][0], "--crop-eyes", "dlib"])
    assert "invalid choice: 'dlib'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ("rafdb:/no/such/folder", "does not exist"),
        ("celeba:/data", "unknown source kind 'celeba'"),
        ("just-a-path", "KIND:PATH"),
    ],
)
def test_cli_errors_exit_2_with_one_line(tmp_path, capsys, source, match):
    assert main(["prepare", "--source", source, "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fer-mtl prepare: error:") and match in err
    assert main(["sample-data", "--out", str(tmp_path / "raw"), "--n", "3"]) == 2
    assert "`n` must be an integer >= 14" in capsys.readouterr().err
