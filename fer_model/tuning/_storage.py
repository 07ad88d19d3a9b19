"""Where a study lives: a journal file (processes on one disk) or PostgreSQL (pipeline pods).

Also the *claim lock*: the short critical section in which a worker counts the study's trials and
creates the next one. Optuna's `MaxTrialsCallback` only checks after a trial ends, so N workers
can overshoot the target by up to N - 1; counting and reserving under one lock makes the total exact.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fer_model.errors import ConfigError, StorageError
from fer_model.tuning._reconnect import call_reconnecting, reconnecting_rdb_storage_class

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

StorageKind = Literal["journal", "postgresql"]
_POSTGRES_SCHEMES = ("postgresql://", "postgresql+psycopg2://")
# user:password@ -> user:***@ in anything we print or write.
_PASSWORD = re.compile(r"(://[^:/@]+:)[^@]*@")


def storage_kind(storage: str) -> StorageKind:
    """"postgresql" for a PostgreSQL URL, "journal" for a file path; ConfigError for other URLs."""
    if storage.startswith(_POSTGRES_SCHEMES):
        return "postgresql"
    if "://" in storage:
        scheme = storage.split("://", 1)[0]
        hint = " (write postgresql://, SQLAlchemy 2 rejects postgres://)" if scheme == "postgres" else ""
        raise ConfigError(
            f"storage URL scheme {scheme!r} is not supported{hint}; pass a journal file path or a "
            "postgresql://user:password@host:port/db URL"
        )
    return "journal"


def driver_url(storage: str) -> str:
    """The SQLAlchemy URL with the psycopg2 driver named: SQLAlchemy 2.1 maps a bare postgresql:// to
    psycopg 3, which is not installed (psycopg2-binary is)."""
    if storage.startswith("postgresql://"):
        return "postgresql+psycopg2://" + storage[len("postgresql://"):]
    return storage


def redact(storage: str) -> str:
    """The storage with any URL password replaced by ***, safe to log and to write into reports."""
    return _PASSWORD.sub(r"\1***@", storage)


def open_storage(
    storage: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None, must_exist: bool = False
) -> optuna.storages.BaseStorage:
    """An Optuna storage for a journal path or a PostgreSQL URL.

    Args:
        storage: Journal file path (its folder is created) or postgresql:// URL.
        heartbeat_interval: Seconds between heartbeats of running trials (PostgreSQL only; None = off).
        grace_period: Seconds without a heartbeat before a trial is failed and re-queued once.
        must_exist: For readers: a journal file that does not exist is an error, not a new study.

    Raises:
        ConfigError: unsupported URL scheme, or the journal path is a folder.
        StorageError: the database cannot be reached or the journal file cannot be created.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if storage_kind(storage) == "postgresql":
        import sqlalchemy.exc

        kwargs = {}
        if heartbeat_interval is not None:
            # A trial whose worker dies (pod evicted, OOM) is failed after `grace_period` and queued
            # again, once, with the same parameters, so a preemption does not lose the point.
            kwargs = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            }
        storage_class = reconnecting_rdb_storage_class()
        try:
            # pool_pre_ping: a long trial can outlive an idle connection that a proxy closed. The
            # reconnecting class rides out a server restart (and a server still starting up).
            return call_reconnecting(
                lambda: _create_rdb_storage(storage_class, driver_url(storage), **kwargs),
                what=f"open {redact(storage)}",
            )
        except sqlalchemy.exc.SQLAlchemyError as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            raise StorageError(
                f"cannot open the study database {redact(storage)}: {type(e).__name__}: {first_line}; "
                "check host, port, credentials and that the database exists"
            ) from e
    path = Path(storage).expanduser()
    if must_exist and not path.is_file():
        raise ConfigError(f"journal storage {path} does not exist; run `fer-mtl tune --storage {path}` first")
    if path.is_dir():
        raise ConfigError(f"journal storage {path} is a folder; pass a file path such as {path / 'study.journal'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as e:
        raise StorageError(f"cannot create the journal file {path}: {e}") from e


def _create_rdb_storage(storage_class: type, url: str, **kwargs: object) -> optuna.storages.RDBStorage:
    """The storage at `url`, whose tables the first worker to get there creates.

    Workers starting together on a new database race to create the tables; the losers' CREATE
    fails on a unique constraint once the winner's is committed, and their second look finds them.
    """
    import sqlalchemy.exc

    attempts_left = _SCHEMA_ATTEMPTS
    while True:
        try:
            return storage_class(url, engine_kwargs={"pool_pre_ping": True}, **kwargs)
        except sqlalchemy.exc.IntegrityError:
            attempts_left -= 1
            if not attempts_left:
                raise
            logger.info("another worker was creating the study tables; looking again")


_SCHEMA_ATTEMPTS = 3


def _advisory_key(study_name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_xact_lock, one per study."""
    digest = hashlib.sha256(f"fer-mtl-tune:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ClaimLock:
    """A cross-process mutex per (storage, study), held only while a worker claims its next trial.

    Journal: `flock` on a lock file next to the journal. The kernel releases it when the holder dies,
    even by SIGKILL, and a waiter sleeps instead of polling. (Optuna's symlink lock, used before,
    polls without sleeping when the link's target does not exist, and a holder killed mid-claim left
    every other worker spinning forever.) PostgreSQL: a transaction-scoped advisory lock, released by commit or by the
    server if the worker's connection dies, so a killed pod can never leave it held.
    """

    def __init__(self, storage: str, study_name: str) -> None:
        self._storage = storage
        self._study_name = study_name
        self._engine = None
        if storage_kind(storage) == "postgresql":
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            # NullPool: one short connection per claim; nothing idles between trials.
            self._engine = sqlalchemy.create_engine(driver_url(storage), poolclass=NullPool)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for the body of a `with` block."""
        if self._engine is None:
            path = Path(str(Path(self._storage).expanduser()) + ".claim")
            try:
                handle = path.open("a")
            except OSError as e:
                raise StorageError(f"cannot open the claim lock file {path}: {e}") from e
            with handle:
                # Closing the file releases the lock.
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            return
        import sqlalchemy
        import sqlalchemy.exc

        where = f"study {self._study_name!r} in {redact(self._storage)}"
        try:
            conn = call_reconnecting(self._locked_connection, what=f"lock {where}")
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise StorageError(f"cannot lock {where}: {e}") from e
        try:
            yield
        finally:
            try:
                # Closing rolls the transaction back, which releases the advisory lock.
                conn.close()
            except sqlalchemy.exc.SQLAlchemyError as e:
                # The connection broke (server restarted): the server dropped the lock with it.
                logger.warning("releasing the claim lock of %s: %s", where, str(e).splitlines()[0])

    def _locked_connection(self) -> Any:
        """A connection whose open transaction holds the study's advisory lock."""
        import sqlalchemy

        conn = self._engine.connect()
        try:
            # SQLAlchemy 2 begins a transaction here; the lock lives until that transaction ends.
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"),
                         {"key": _advisory_key(self._study_name)})
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
