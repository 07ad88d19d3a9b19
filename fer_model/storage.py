"""Local paths and `gs://` URIs: one place that moves files to and from Google Cloud Storage.

Every other module takes a local path; entry points (CLI, components) call `local_source` to turn
a `gs://` source into one, and `upload` to publish an artifact folder.

Transfers are retried with exponential backoff (google.api_core.retry) on transient failures
(connection errors, 408/429/5xx). Objects above 8 MiB upload resumably in `chunk_size` pieces, so
a broken connection costs one chunk, not the whole model. A folder downloads several objects at
once (`transfer_manager`, threads). Before a transfer a short, bounded probe
checks that the bucket exists and the endpoint answers, so a typo in the bucket name or an
unreachable endpoint fails in seconds with a `StorageError`, instead of hanging in retries.

Credentials come from Application Default Credentials (Workload Identity on GKE, or
GOOGLE_APPLICATION_CREDENTIALS). Only when STORAGE_EMULATOR_HOST is set (a local emulator) does
the client fall back to anonymous access.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from fer_model.errors import StorageError

if TYPE_CHECKING:  # google-cloud-storage is imported lazily: local-only runs never pay for it.
    from google.cloud.storage import Bucket, Client

logger = logging.getLogger(__name__)

GCS_SCHEME = "gs://"
#: Resumable-upload chunk size; GCS requires a multiple of 256 KiB.
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
_CHUNK_QUANTUM = 256 * 1024
#: (connect, read) seconds for each HTTP request of a transfer.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 120.0)
#: Total seconds a transfer keeps retrying transient failures.
DEFAULT_RETRY_DEADLINE = 300.0
#: Objects downloaded at once (threads: a data set of many small images is latency-bound, not CPU-bound).
DEFAULT_DOWNLOAD_WORKERS = 8
# The pre-flight probe is deliberately short: it only asks "is the bucket there?".
_PROBE_TIMEOUT: tuple[float, float] = (3.0, 10.0)
_PROBE_DEADLINE = 6.0
# Name of the file next to a cached download recording which object versions it holds.
_CACHE_STAMP_SUFFIX = ".source.json"


@dataclass(frozen=True)
class GcsUri:
    """A parsed `gs://bucket/key` URI (`key` may be empty, meaning the whole bucket)."""

    bucket: str
    key: str

    def __post_init__(self) -> None:
        if not self.bucket or "/" in self.bucket:
            raise StorageError(f"invalid gs:// bucket name {self.bucket!r}; expected gs://BUCKET/PATH")

    def __str__(self) -> str:
        return f"{GCS_SCHEME}{self.bucket}/{self.key}"

    @property
    def prefix(self) -> str:
        """The key as a folder prefix ("" for the bucket root, otherwise ending in "/")."""
        key = self.key.strip("/")
        return f"{key}/" if key else ""


def is_gcs(uri: str | os.PathLike[str]) -> bool:
    """True when `uri` names a Google Cloud Storage location (`gs://...`)."""
    return str(uri).startswith(GCS_SCHEME)


def parse_gcs_uri(uri: str) -> GcsUri:
    """Split `gs://bucket/key` into bucket and key; raises StorageError for anything else."""
    if not is_gcs(uri):
        raise StorageError(f"not a gs:// URI: {uri!r}")
    bucket, _, key = uri[len(GCS_SCHEME) :].partition("/")
    return GcsUri(bucket=bucket, key=key)


def local_source(uri: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """A local path holding the data at `uri`.

    A local path (or `file://` URI) is returned as is after checking that it exists. A `gs://`
    object or prefix is downloaded into `cache_dir` (default: a `fer-mtl-cache` folder in the
    system temp dir) and reused on the next call while the remote objects are unchanged
    (same names, generations and sizes).

    Raises:
        StorageError: the local path does not exist, or the download fails.
    """
    text = str(uri)
    if not is_gcs(text):
        path = Path(text.removeprefix("file://")).expanduser()
        if not path.exists():
            raise StorageError(f"source {text!r} does not exist; pass an existing file or folder, or a gs:// URI")
        return path
    gcs = parse_gcs_uri(text)
    root = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "fer-mtl-cache"
    root.mkdir(parents=True, exist_ok=True)
    client = _client()
    bucket = _checked_bucket(client, gcs)
    blobs, is_file = _resolve(bucket, gcs)
    signature = sorted([b.name, b.generation, b.size] for b in blobs)
    slot = root / hashlib.sha256(text.encode()).hexdigest()[:16]
    stamp = slot.with_name(slot.name + _CACHE_STAMP_SUFFIX)
    target = slot / (PurePosixPath(gcs.key.rstrip("/")).name or gcs.bucket)
    if target.exists() and stamp.exists() and json.loads(stamp.read_text()) == signature:
        logger.info("using cached copy of %s at %s", text, target)
        return target
    shutil.rmtree(slot, ignore_errors=True)
    _download_blobs(blobs, gcs, target, is_file=is_file)
    stamp.write_text(json.dumps(signature))
    return target


def download(
    uri: str,
    dest: str | os.PathLike[str],
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    retry_deadline: float = DEFAULT_RETRY_DEADLINE,
    workers: int = DEFAULT_DOWNLOAD_WORKERS,
) -> Path:
    """Download one object, or every object under a prefix, from `uri` to `dest`.

    An object lands at `dest` (a file path); a prefix lands as a folder at `dest` with the same
    relative layout, `workers` objects at a time. The result appears atomically (written under a
    temporary name, then renamed).

    Raises:
        StorageError: bad URI, missing bucket, nothing at `uri`, no credentials, or transfer failure.
    """
    if workers < 1:
        raise StorageError(f"`workers` must be >= 1, got {workers}")
    gcs = parse_gcs_uri(uri)
    client = _client()
    bucket = _checked_bucket(client, gcs)
    blobs, is_file = _resolve(bucket, gcs)
    return _download_blobs(blobs, gcs, Path(dest), is_file=is_file, timeout=timeout, retry_deadline=retry_deadline,
                           workers=workers)


def upload(
    local_path: str | os.PathLike[str],
    uri: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    retry_deadline: float = DEFAULT_RETRY_DEADLINE,
) -> str:
    """Upload a file to the object `uri`, or a folder to the prefix `uri` (recursively).

    Args:
        local_path: A file or a folder.
        uri: `gs://bucket/key`; for a folder, files land at `key/<relative path>`.
        chunk_size: Resumable-upload chunk size in bytes (a multiple of 256 KiB).
        timeout: (connect, read) seconds per HTTP request.
        retry_deadline: Total seconds to keep retrying transient failures.

    A folder's manifest (`manifest.json` or `config.json` at its top) is what readers accept an
    artifact by: any old one at `uri` is deleted first and the new one goes up last, so an upload cut
    off midway (a killed pod) leaves no manifest, and readers refuse the half-written folder instead
    of mixing old and new files. Re-running the upload completes it.

    Returns:
        The URI uploaded to.

    Raises:
        StorageError: missing local path, bad URI or chunk size, missing bucket, no credentials,
            or a transfer that still fails after retries.
    """
    if chunk_size <= 0 or chunk_size % _CHUNK_QUANTUM:
        raise StorageError(f"`chunk_size` must be a positive multiple of {_CHUNK_QUANTUM} bytes, got {chunk_size}")
    src = Path(local_path)
    if not src.exists():
        raise StorageError(f"cannot upload {str(src)!r}: no such file or folder")
    gcs = parse_gcs_uri(uri)
    if src.is_file():
        if not gcs.key or gcs.key.endswith("/"):
            raise StorageError(f"cannot upload file {src} to {uri!r}: the URI must name an object, not a folder")
        files = [(src, gcs.key)]
    else:
        files = _folder_upload_order(src, gcs)
    client = _client()
    bucket = _checked_bucket(client, gcs)
    retry = _transfer_retry(retry_deadline)
    if src.is_dir():
        _retract_markers(bucket, gcs, retry=retry)
    total = 0
    for path, key in files:
        blob = bucket.blob(key, chunk_size=chunk_size)
        # Uploads are not conditional (no if_generation_match), so the library would not retry
        # them by default; re-sending the same bytes to the same name is safe for artifacts.
        _call(
            lambda blob=blob, path=path: blob.upload_from_filename(str(path), timeout=timeout, retry=retry),
            what=f"upload {path} to gs://{gcs.bucket}/{key}",
        )
        total += path.stat().st_size
    logger.info("uploaded %d file(s), %d bytes, to %s", len(files), total, uri)
    return uri


def exists(uri: str) -> bool:
    """True when the object `uri` (not a prefix) exists.

    Raises:
        StorageError: bad URI, missing bucket, no credentials, or the lookup fails.
    """
    gcs = parse_gcs_uri(uri)
    bucket = _checked_bucket(_client(), gcs)
    return _call(lambda: bucket.get_blob(gcs.key, timeout=_PROBE_TIMEOUT), what=f"look up {gcs}") is not None


def object_versions(uri: str) -> list[tuple[str, int, int]]:
    """(name, generation, size) of every object at a `gs://` object or prefix, sorted; nothing is downloaded.

    A new upload to the same name gets a new generation, so this list changes whenever the data does.

    Raises:
        StorageError: the bucket or the objects cannot be listed.
    """
    gcs = parse_gcs_uri(uri)
    blobs, _ = _resolve(_checked_bucket(_client(), gcs), gcs)
    return sorted((b.name, int(b.generation or 0), int(b.size or 0)) for b in blobs)


# --- internals -------------------------------------------------------------------------------

#: Top-level files that mark an artifact folder complete (dataset, model): uploaded last.
MARKER_FILES = ("manifest.json", "config.json")


def _folder_upload_order(src: Path, gcs: GcsUri) -> list[tuple[Path, str]]:
    """(file, object name) for every file under `src`, sorted, its marker files last."""
    files = [p for p in sorted(src.rglob("*")) if p.is_file()]
    markers = [p for p in files if p.parent == src and p.name in MARKER_FILES]
    body = [p for p in files if p not in markers]
    return [(p, gcs.prefix + p.relative_to(src).as_posix()) for p in [*body, *markers]]


def _retract_markers(bucket: Bucket, gcs: GcsUri, *, retry: Any) -> None:
    """Delete the marker objects of an artifact already at `gcs`, before its files are replaced."""
    for name in MARKER_FILES:
        key = gcs.prefix + name
        blob = _call(lambda key=key: bucket.get_blob(key, timeout=_PROBE_TIMEOUT), what=f"look up gs://{gcs.bucket}/{key}")
        if blob is not None:
            _call(lambda blob=blob: blob.delete(timeout=DEFAULT_TIMEOUT, retry=retry),
                  what=f"delete the old gs://{gcs.bucket}/{key} before replacing the folder")


def _client() -> Client:
    """A storage client; a clear StorageError when no credentials are available."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        # With STORAGE_EMULATOR_HOST set the library itself uses anonymous credentials.
        return storage.Client()
    except DefaultCredentialsError as e:
        raise StorageError(
            "no Google Cloud credentials found; use Workload Identity on GKE, set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run `gcloud auth "
            "application-default login` (for a local emulator set STORAGE_EMULATOR_HOST=http://HOST:PORT)"
        ) from e


def _endpoint(client: Client) -> str:
    return str(client.api_endpoint)


def _transfer_retry(deadline: float) -> Any:
    """The library's transient-error predicate with our exponential backoff and total deadline."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    return DEFAULT_RETRY.with_delay(initial=1.0, maximum=30.0, multiplier=2.0).with_timeout(deadline)


def _call(fn: Any, *, what: str) -> Any:
    """Run one storage call, turning library and transport errors into StorageError."""
    try:
        return fn()
    except Exception as e:
        error = _storage_error(e, what=what)
        if error is None:
            raise
        raise error from e


def _storage_error(e: BaseException, *, what: str) -> StorageError | None:
    """The StorageError for a library or transport error of the call `what`; None for anything else."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

    if isinstance(e, gexc.NotFound):
        return StorageError(f"cannot {what}: not found ({e.message})")
    if isinstance(e, gexc.Forbidden):
        return StorageError(f"cannot {what}: permission denied; grant the service account access ({e.message})")
    if isinstance(e, gexc.RetryError):
        return StorageError(f"cannot {what}: still failing after retries ({e.cause or e})")
    if isinstance(e, (gexc.GoogleAPICallError, InvalidResponse, DataCorruption)):
        return StorageError(f"cannot {what}: {e}")
    if isinstance(e, (requests.RequestException, auth_exc.TransportError, OSError)):
        return StorageError(f"cannot {what}: {type(e).__name__}: {e}")
    return None


def _checked_bucket(client: Client, gcs: GcsUri) -> Bucket:
    """The bucket of `gcs`, after a short probe that it exists and the endpoint answers."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc
    from google.cloud.storage.retry import DEFAULT_RETRY

    bucket = client.bucket(gcs.bucket)
    probe_retry = DEFAULT_RETRY.with_delay(initial=0.25, maximum=2.0, multiplier=2.0).with_timeout(_PROBE_DEADLINE)
    try:
        # Listing one object needs only storage.objects.list, which reader and writer roles have;
        # it answers 404 for a missing bucket.
        next(iter(client.list_blobs(bucket, max_results=1, timeout=_PROBE_TIMEOUT, retry=probe_retry)), None)
    except gexc.NotFound as e:
        raise StorageError(
            f"bucket {gcs.bucket!r} (from {gcs}) does not exist; create it with "
            f"`gcloud storage buckets create gs://{gcs.bucket}` or fix the URI"
        ) from e
    except gexc.Forbidden:
        # A write-only role (objectCreator) may not list; let the transfer itself decide.
        logger.debug("cannot list gs://%s (forbidden); skipping the bucket probe", gcs.bucket)
    except (gexc.RetryError, requests.RequestException, auth_exc.TransportError) as e:
        raise StorageError(
            f"cannot reach Cloud Storage at {_endpoint(client)} for {gcs} within {_PROBE_DEADLINE:.0f}s "
            f"({type(e).__name__}); check the network, or STORAGE_EMULATOR_HOST if you use an emulator"
        ) from e
    except gexc.GoogleAPICallError as e:
        raise StorageError(f"cannot access bucket {gcs.bucket!r}: {e}") from e
    return bucket


def _resolve(bucket: Bucket, gcs: GcsUri) -> tuple[list[Any], bool]:
    """The blobs at `gcs`: ([blob], True) for one object, (blobs under the prefix, False) for a folder."""
    key = gcs.key
    if key and not key.endswith("/"):
        blob = _call(lambda: bucket.get_blob(key, timeout=_PROBE_TIMEOUT), what=f"look up {gcs}")
        if blob is not None:
            return [blob], True
    prefix = gcs.prefix
    blobs = _call(lambda: list(bucket.list_blobs(prefix=prefix, timeout=DEFAULT_TIMEOUT)), what=f"list {gcs}")
    # Zero-byte "folder" placeholders (names ending in "/") are not files.
    blobs = [b for b in blobs if not b.name.endswith("/")]
    if not blobs:
        raise StorageError(f"nothing at {gcs}: no such object and no objects under that prefix")
    return blobs, False


def _download_blobs(
    blobs: list[Any],
    gcs: GcsUri,
    dest: Path,
    *,
    is_file: bool,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    retry_deadline: float = DEFAULT_RETRY_DEADLINE,
    workers: int = DEFAULT_DOWNLOAD_WORKERS,
) -> Path:
    """Download `blobs` to `dest` (a file when `is_file`, else a folder), atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    retry = _transfer_retry(retry_deadline)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        pairs = [(blobs[0], tmp / "object")] if is_file else [
            (b, tmp.joinpath(*PurePosixPath(b.name[len(gcs.prefix) :]).parts)) for b in blobs
        ]
        for _, path in pairs:
            path.parent.mkdir(parents=True, exist_ok=True)
        _download_parallel(pairs, gcs, timeout=timeout, retry=retry, workers=workers)
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(pairs[0][1] if is_file else tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("downloaded %d object(s) from %s to %s", len(blobs), gcs, dest)
    return dest


def _download_parallel(
    pairs: list[tuple[Any, Path]], gcs: GcsUri, *, timeout: tuple[float, float], retry: Any, workers: int
) -> None:
    """Download each (blob, path) pair with `transfer_manager`, `workers` at a time; the first failure raises.

    Threads, not processes: blobs and their client are used as they are (never pickled), and a
    small pod does not pay for a process per worker.
    """
    from google.cloud.storage import transfer_manager

    results = _call(
        lambda: transfer_manager.download_many(
            [(blob, str(path)) for blob, path in pairs],
            # checksum="auto" (the default) verifies crc32c/md5 of what arrived.
            download_kwargs={"timeout": timeout, "retry": retry},
            raise_exception=False,
            worker_type=transfer_manager.THREAD,
            max_workers=workers,
        ),
        what=f"download {gcs}",
    )
    for (blob, _), result in zip(pairs, results, strict=True):
        if isinstance(result, BaseException):
            what = f"download gs://{gcs.bucket}/{blob.name}"
            raise _storage_error(result, what=what) or StorageError(f"cannot {what}: {result!r}") from result
