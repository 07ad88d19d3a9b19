"""fer_model.storage against a real GCS protocol server (gcp-storage-emulator) on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from fer_model import storage
from fer_model.errors import StorageError

_EMULATOR = Path(sys.executable).with_name("gcp-storage-emulator")
_CHUNK = 256 * 1024  # the smallest legal chunk, so a modest file spans many chunks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """A running in-memory emulator; stopped (by its pid) when the module's tests are done."""
    if not _EMULATOR.exists():
        pytest.fail(f"{_EMULATOR} missing: install the `test` extra (gcp-storage-emulator)")
    port = _free_port()
    proc = subprocess.Popen(
        [str(_EMULATOR), "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gcp-storage-emulator did not answer on {url}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def bucket(emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket name on the emulator, with the environment pointing the client at it."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_url)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    from google.cloud import storage as gcs

    name = f"fer-test-{uuid.uuid4().hex[:12]}"
    gcs.Client().create_bucket(name)
    return name


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _model_like_folder(root: Path) -> Path:
    """Files shaped like a model artifact: small JSON, a nested SavedModel, and a big binary."""
    rng = np.random.default_rng(0)
    (root / "saved_model" / "1" / "variables").mkdir(parents=True)
    (root / "config.json").write_text('{"format": "fer-mtl-model", "format_version": 1}')
    (root / "history.json").write_text('{"loss": [1.0, 0.5]}')
    (root / "saved_model" / "1" / "saved_model.pb").write_bytes(rng.bytes(3000))
    # Above the library's 8 MiB multipart limit, so it goes up as a chunked resumable upload.
    (root / "saved_model" / "1" / "variables" / "variables.data-00000-of-00001").write_bytes(
        rng.bytes(8 * 1024 * 1024 + 3 * _CHUNK + 17)
    )
    (root / "model.keras").write_bytes(rng.bytes(_CHUNK + 1))
    (root / "empty.txt").write_bytes(b"")
    return root


def _dataset_like_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    np.save(root / "images.npy", rng.integers(0, 256, size=(40, 50, 50), dtype=np.uint8))
    np.save(root / "split.npy", rng.integers(0, 3, size=40, dtype=np.uint8))
    np.savez(root / "labels.npz", emotion=rng.integers(-1, 7, size=40, dtype=np.int8))
    (root / "manifest.json").write_text('{"format": "fer-mtl-dataset", "format_version": 1}')
    return root


@pytest.mark.parametrize("make", [_model_like_folder, _dataset_like_folder], ids=["model", "dataset"])
def test_folder_round_trip_is_byte_identical(bucket: str, tmp_path: Path, make) -> None:
    src = make(tmp_path / "src")
    uri = f"gs://{bucket}/runs/7/artifact"
    assert storage.upload(src, uri, chunk_size=_CHUNK) == uri
    back = storage.download(uri, tmp_path / "back")
    assert _tree(back) == _tree(src)
    # A sibling prefix sharing the name's start must not leak in ("artifact" vs "artifact-old").
    storage.upload(src / "config.json" if (src / "config.json").exists() else src / "manifest.json",
                   f"gs://{bucket}/runs/7/artifact-old/x.json")
    assert _tree(storage.download(uri + "/", tmp_path / "again")) == _tree(src)


def test_single_file_round_trip_and_overwrite(bucket: str, tmp_path: Path) -> None:
    src = tmp_path / "metrics.json"
    src.write_text('{"a": 1}')
    storage.upload(src, f"gs://{bucket}/m/metrics.json")
    dest = tmp_path / "out" / "metrics.json"
    assert storage.download(f"gs://{bucket}/m/metrics.json", dest).read_text() == '{"a": 1}'
    src.write_text('{"a": 2}')
    storage.upload(src, f"gs://{bucket}/m/metrics.json")
    assert storage.download(f"gs://{bucket}/m/metrics.json", dest).read_text() == '{"a": 2}'


def test_local_source_caches_until_the_remote_changes(bucket: str, tmp_path: Path) -> None:
    src = _dataset_like_folder(tmp_path / "ds")
    uri = f"gs://{bucket}/datasets/ds"
    storage.upload(src, uri)
    cache = tmp_path / "cache"
    first = storage.local_source(uri, cache_dir=cache)
    assert first.name == "ds" and _tree(first) == _tree(src)
    marker = first / "local-only-marker"
    marker.write_text("x")  # survives only if the second call reuses the cached copy
    assert storage.local_source(uri, cache_dir=cache) == first and marker.exists()
    (src / "manifest.json").write_text('{"format": "fer-mtl-dataset", "format_version": 2}')
    storage.upload(src, uri)
    third = storage.local_source(uri, cache_dir=cache)
    assert not marker.exists() and _tree(third) == _tree(src)


def test_local_source_passes_local_paths_through(tmp_path: Path) -> None:
    assert storage.local_source(str(tmp_path)) == tmp_path
    assert storage.local_source(f"file://{tmp_path}") == tmp_path
    with pytest.raises(StorageError, match="does not exist"):
        storage.local_source(tmp_path / "nope")


@pytest.mark.parametrize(
    ("uri", "match"),
    [("s3://b/k", "not a gs:// URI"), ("gs:///k", "invalid gs:// bucket"), ("gs://b", "must name an object")],
)
def test_bad_uris_are_rejected(tmp_path: Path, uri: str, match: str) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(StorageError, match=match):
        storage.upload(f, uri)


def test_bad_chunk_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="chunk_size"):
        storage.upload(tmp_path, "gs://b/k", chunk_size=1000)


def test_missing_bucket_is_a_clear_error(bucket: str, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-xyz' .* does not exist"):
        storage.upload(f, "gs://no-such-bucket-xyz/f")
    with pytest.raises(StorageError, match="does not exist"):
        storage.download("gs://no-such-bucket-xyz/f", tmp_path / "g")


def test_missing_object_is_a_clear_error(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nothing at gs://.*/absent"):
        storage.download(f"gs://{bucket}/absent", tmp_path / "g")


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    f = tmp_path / "f"
    f.write_text("x")
    start = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach Cloud Storage at http://127.0.0.1"):
        storage.upload(f, "gs://b/f")
    assert time.monotonic() - start < 15


def test_missing_credentials_are_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("STORAGE_EMULATOR_HOST", "API_ENDPOINT_OVERRIDE", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    # Point ADC at a missing key file and away from any gcloud config or metadata server.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    with pytest.raises(StorageError, match="no Google Cloud credentials"):
        storage.download("gs://b/f", tmp_path / "g")


def test_many_small_objects_download_in_parallel_threads(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.storage import transfer_manager

    src = tmp_path / "faces"
    rng = np.random.default_rng(2)
    for i in range(60):
        (src / f"class_{i % 7}").mkdir(parents=True, exist_ok=True)
        (src / f"class_{i % 7}" / f"img_{i:03d}.png").write_bytes(rng.bytes(int(rng.integers(1, 2000))))
    storage.upload(src, f"gs://{bucket}/raw/faces")
    calls: list[dict] = []
    real = transfer_manager.download_many

    def spy(pairs, **kwargs):
        calls.append({"n": len(pairs), **kwargs})
        return real(pairs, **kwargs)

    monkeypatch.setattr(transfer_manager, "download_many", spy)
    back = storage.download(f"gs://{bucket}/raw/faces", tmp_path / "back", workers=4)
    assert _tree(back) == _tree(src)
    assert [(c["n"], c["worker_type"], c["max_workers"]) for c in calls] == [(60, transfer_manager.THREAD, 4)]


def test_a_failed_object_in_a_parallel_download_names_it(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _dataset_like_folder(tmp_path / "ds")
    storage.upload(src, f"gs://{bucket}/ds")
    real_resolve = storage._resolve

    def with_a_vanished_object(bucket_obj, gcs):
        # Listed, then deleted before its download: what a concurrent writer does to a prefix.
        blobs, is_file = real_resolve(bucket_obj, gcs)
        return [*blobs, bucket_obj.blob("ds/vanished.npy")], is_file

    monkeypatch.setattr(storage, "_resolve", with_a_vanished_object)
    with pytest.raises(StorageError, match=rf"cannot download gs://{bucket}/ds/vanished.npy: not found"):
        storage.download(f"gs://{bucket}/ds", tmp_path / "back")
    assert not (tmp_path / "back").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".back.")] == []


def test_bad_worker_count_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="`workers` must be >= 1, got 0"):
        storage.download("gs://b/x", tmp_path / "x", workers=0)


# --- an upload cut off midway ----------------------------------------------------------------


def _object_names(bucket: str, prefix: str) -> set[str]:
    from google.cloud import storage as gcs

    return {b.name for b in gcs.Client().list_blobs(bucket, prefix=prefix)}


def test_folder_upload_sends_the_manifest_last(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.cloud.storage import Blob

    order: list[str] = []
    real = Blob.upload_from_filename
    monkeypatch.setattr(Blob, "upload_from_filename",
                        lambda self, *a, **k: (order.append(self.name), real(self, *a, **k)))
    storage.upload(_dataset_like_folder(tmp_path / "ds"), f"gs://{bucket}/ds")
    assert order[-1] == "ds/manifest.json" and sorted(order) == sorted(_object_names(bucket, "ds/"))


def test_a_killed_upload_leaves_no_manifest_and_a_retry_completes_it(
    bucket: str, emulator_url: str, tmp_path: Path
) -> None:
    from fer_model.dataset import load_dataset, write_dataset
    from fer_model.errors import ArtifactError

    def dataset(name: str, n: int, seed: int) -> Path:
        # images.npy is big enough (tens of chunks) that the kill lands while it is in flight.
        rng = np.random.default_rng(seed)
        labels = {t: np.full(n, -1, np.int8) for t in ("emotion", "gender", "race", "age")}
        return write_dataset(tmp_path / name, images=rng.integers(0, 256, (n, 50, 50), dtype=np.uint8),
                             labels=labels, split=(np.arange(n) % 3).astype(np.uint8))

    uri = f"gs://{bucket}/datasets/faces"
    storage.upload(dataset("old", 40, 0), uri)  # an earlier, complete version at the same URI
    new = dataset("new", 6000, 1)
    code = f"from fer_model import storage; storage.upload({str(new)!r}, {uri!r}, chunk_size={_CHUNK})"
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "STORAGE_EMULATOR_HOST": emulator_url})
    try:
        # The uploader retracts the old manifest before sending any file: kill it right after.
        deadline = time.monotonic() + 60
        while "datasets/faces/manifest.json" in _object_names(bucket, "datasets/faces/"):
            assert child.poll() is None and time.monotonic() < deadline, "the upload never retracted the manifest"
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    assert "datasets/faces/manifest.json" not in _object_names(bucket, "datasets/faces/")
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load_dataset(storage.local_source(uri, cache_dir=tmp_path / "cache"))

    storage.upload(new, uri, chunk_size=_CHUNK)
    loaded = load_dataset(storage.local_source(uri, cache_dir=tmp_path / "cache"))
    assert len(loaded) == 6000 and _tree(loaded.path) == _tree(new)
