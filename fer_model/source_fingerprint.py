"""A cheap fingerprint of a pipeline's `sources`, so the prepare step's cache key follows the data.

KFP caches a task on its inputs; `sources` is only a string of locations, so new data uploaded to
the same `gs://` URI would silently reuse the old dataset. The fingerprint changes when the data
does, without reading it: for `gs://` the objects' names, generations and sizes (one listing call),
for local paths every file's relative name, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from fer_model.readers import SourceSpec
from fer_model.storage import is_gcs, object_versions

logger = logging.getLogger(__name__)

#: Prefix of every fingerprint, naming the digest (so a future scheme can be told apart).
SCHEME = "sha256:"


def fingerprint_sources(sources: str | Sequence[str]) -> str:
    """A short digest of what is at every source now; "" when there are no sources.

    Args:
        sources: Comma-separated `KIND:PATH` specs (the pipeline's `sources`), or a list of them.

    Returns:
        "sha256:" and 16 hex digits; equal for unchanged data, different when a file or object
        is added, removed, rewritten or replaced.

    Raises:
        ConfigError: a spec is not KIND:PATH.
        StorageError: a gs:// location cannot be listed.
    """
    texts = [s.strip() for s in sources.split(",")] if isinstance(sources, str) else [s.strip() for s in sources]
    specs = [SourceSpec.parse(text) for text in texts if text]
    if not specs:
        return ""
    listing = [[spec.kind, spec.path, _versions(spec.path)] for spec in specs]
    digest = hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()
    return SCHEME + digest[:16]


def _versions(path: str) -> list[list[object]] | None:
    """What identifies the current contents of one source; None for a local path not on this machine."""
    if is_gcs(path):
        return [list(version) for version in object_versions(path)]
    local = Path(path.removeprefix("file://")).expanduser()
    if not local.exists():
        # A path inside the cluster's pods (a mounted volume) cannot be seen from the submitting
        # machine: its cache key is then the path alone, as before.
        logger.warning("source %s is not on this machine: its cache key is its path only", path)
        return None
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    return [_stat_row(p, local) for p in files]


def _stat_row(path: Path, root: Path) -> list[object]:
    info = path.stat()
    name = path.name if path == root else path.relative_to(root).as_posix()
    return [name, info.st_size, info.st_mtime_ns]


__all__ = ["SCHEME", "fingerprint_sources"]
