"""Progress lines for long loops: counts done (of the total, when known), rate, ETA, at most every N seconds.

Lines go through `logging`, whose stream handler flushes each record, so they reach `kfp.local`'s
console and the cluster's pod logs as they happen. Each record also carries the figures as
attributes (`done`, `total`, `rate`, `eta_s`), for whoever reads records rather than text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Seconds between two progress lines of one loop.
DEFAULT_EVERY_S = 10.0


def format_duration(seconds: float) -> str:
    """"42s", "3m05s", "1h02m": short enough for a log line."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """Counts work as it is done and logs `what: done/total (pct), rate/s, ETA` every `every_s` seconds.

    Args:
        what: The loop's name, first on each line ("fer2013: aligned").
        total: Items the loop will do, when known (then lines show the share and an ETA).
        unit: What an item is, for the rate ("images").
        every_s: Seconds between lines; `finish` always logs one more.
        log: Logger to write to (the caller's module logger, so its name says who is working).
        clock: Seconds, monotonic; tests pass a fake.
    """

    def __init__(
        self,
        what: str,
        *,
        total: int | None = None,
        unit: str = "items",
        every_s: float = DEFAULT_EVERY_S,
        log: logging.Logger = logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.every_s = every_s
        self.log = log
        self.clock = clock
        self.done = 0
        self.start = clock()
        self._last = self.start

    def advance(self, n: int = 1) -> None:
        """Count `n` more items done; log a line when `every_s` seconds passed since the last one."""
        self.done += n
        now = self.clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._emit(now, final=False)

    def finish(self) -> None:
        """Log the closing line: items done, time taken, rate."""
        self._emit(self.clock(), final=True)

    def _emit(self, now: float, *, final: bool) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        eta = None
        if self.total is not None and rate > 0 and not final:
            eta = max(self.total - self.done, 0) / rate
        count = f"{self.done}/{self.total}" if self.total is not None else f"{self.done}"
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        tail = f"in {format_duration(elapsed)}" if final else (f"ETA {format_duration(eta)}" if eta is not None
                                                               else f"{format_duration(elapsed)} so far")
        self.log.info(
            "%s %s %s%s, %.1f %s/s, %s", self.what, count, self.unit, share, rate, self.unit, tail,
            extra={"done": self.done, "total": self.total, "rate": rate, "eta_s": eta},
        )
