"""Ride out a PostgreSQL restart: retry study-database calls while the server is unreachable.

A database pod rescheduled mid-study cuts every connection for a few seconds. `pool_pre_ping` only
replaces a dead pooled connection before use; a call that is in flight, or a connection attempt while
the server is still starting, fails. Such failures (no SQLSTATE: the socket is gone; class 08:
connection exception; class 57: operator intervention, e.g. "the database system is starting up";
for a failed connection attempt, which has no SQLSTATE, libpq's message says which) are retried with
backoff for up to `RECONNECT_DEADLINE` seconds. Everything else, a wrong password above all, fails
at once.

A retried write whose commit reached the server before the connection broke runs twice; Optuna's
writes of one trial (state, values, attributes) are idempotent, so only a trial created in that
instant could be duplicated.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

#: Seconds a call keeps retrying an unreachable server before it gives up.
RECONNECT_DEADLINE = 120.0
_FIRST_DELAY = 0.25
_MAX_DELAY = 5.0
# SQLSTATE classes of a lost or refused connection (not of a bad query or bad credentials).
_TRANSIENT_CLASSES = ("08", "57")
_TRANSIENT_TEXT = ("connection refused", "server closed the connection", "starting up", "shutting down",
                   "terminating connection", "connection reset", "no connection to the server",
                   "connection already closed", "timeout expired", "could not receive data")

# The private methods Optuna's per-process cache (`_CachedStorage`) calls on the RDBStorage it wraps.
_CACHE_CALLS = ("_create_new_trial", "_set_trial_param", "_get_best_trial_id", "_get_trials",
                "_get_stale_trial_ids")
_CLASS: type | None = None
# Set while a wrapped call runs, so that the wrapped calls it makes do not retry on their own.
_inside = threading.local()

T = TypeVar("T")


def is_disconnect(error: BaseException) -> bool:
    """True when `error` (or an exception it wraps) says the database connection was lost or refused."""
    import sqlalchemy.exc

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.DBAPIError):
            if seen.connection_invalidated:
                return True
            if isinstance(seen, sqlalchemy.exc.OperationalError):
                code = getattr(seen.orig, "pgcode", None)
                if code is not None:
                    return str(code)[:2] in _TRANSIENT_CLASSES
                # A failed connection attempt carries no SQLSTATE, only libpq's text: a refused or cut
                # connection and a server starting or stopping are transient, bad credentials are not.
                text = str(seen.orig).lower()
                return any(fragment in text for fragment in _TRANSIENT_TEXT)
            return False
        seen = seen.__cause__ or seen.__context__
    return False


def call_reconnecting(fn: Callable[[], T], *, what: str, deadline_s: float = RECONNECT_DEADLINE) -> T:
    """`fn()`, retried with exponential backoff while it fails by losing the database connection."""
    give_up = time.monotonic() + deadline_s
    delay = _FIRST_DELAY
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_disconnect(e) or time.monotonic() + delay > give_up:
                raise
            logger.warning("%s: database connection lost (%s); retrying in %.2gs", what, _first_line(e), delay)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)


def _first_line(error: BaseException) -> str:
    """The first line of the innermost cause (Optuna wraps the driver's error in a generic message)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return (str(error).splitlines() or [type(error).__name__])[0][:200]


def reconnecting_rdb_storage_class() -> type:
    """A subclass of Optuna's RDBStorage whose every call from outside goes through `call_reconnecting`.

    A subclass, not a wrapper: Optuna recognises it as an RDBStorage (its per-process cache and
    heartbeat thread work as before), and the heartbeat thread's own calls are retried too.
    """
    global _CLASS
    if _CLASS is None:
        import optuna

        base = optuna.storages.RDBStorage
        names = [name for name, value in vars(base).items() if callable(value)
                 and not isinstance(value, staticmethod | classmethod)
                 and (not name.startswith("_") or name in _CACHE_CALLS)]
        methods = {name: _retrying(getattr(base, name), name) for name in names}
        _CLASS = type("ReconnectingRDBStorage", (base,), {"__module__": __name__,
                                                         "__qualname__": "ReconnectingRDBStorage", **methods})
    return _CLASS


def __getattr__(name: str) -> Any:
    # Pickle finds the class by this name in a process that has not built it yet.
    if name == "ReconnectingRDBStorage":
        return reconnecting_rdb_storage_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _retrying(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "retrying", False):
            # Called by another wrapped method (get_all_trials -> _get_trials): the outer one retries.
            return method(self, *args, **kwargs)
        _inside.retrying = True
        try:
            return call_reconnecting(lambda: method(self, *args, **kwargs), what=f"study storage {name}")
        finally:
            _inside.retrying = False

    return call
