"""fer_model.progress: counts, rate and ETA at most every N seconds, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from fer_model.progress import Progress, format_duration


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_every_n_seconds_with_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fer_model.progress")
    clock = _Clock()
    progress = Progress("fer2013: aligned", total=100, unit="images", every_s=5, clock=clock)
    clock.now += 2
    progress.advance(4)  # 2 s after the start: too soon for a line
    clock.now += 3
    progress.advance(6)  # 5 s: 10 done, 2/s, 90 left -> 45 s
    clock.now += 1
    progress.advance(10)  # 1 s after the last line: quiet
    clock.now += 4
    progress.advance(20)  # 10 s: 40 done, 4/s, 60 left -> 15 s
    clock.now += 1
    progress.finish()
    got = [(r.done, r.total, r.rate, r.eta_s) for r in caplog.records]
    assert got == [
        (10, 100, pytest.approx(2.0), pytest.approx(45.0)),
        (40, 100, pytest.approx(4.0), pytest.approx(15.0)),
        (40, 100, pytest.approx(40 / 11), None),
    ]
    assert caplog.records[0].getMessage() == "fer2013: aligned 10/100 images (10%), 2.0 images/s, ETA 45s"
    assert caplog.records[-1].getMessage() == "fer2013: aligned 40/100 images (40%), 3.6 images/s, in 11s"


def test_without_a_total_there_is_no_eta(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fer_model.prepare")
    clock = _Clock()
    progress = Progress("folder: aligned", every_s=0, log=logging.getLogger("fer_model.prepare"), clock=clock)
    clock.now += 2
    progress.advance(3)
    (record,) = caplog.records
    assert (record.name, record.done, record.total, record.eta_s) == ("fer_model.prepare", 3, None, None)
    assert record.getMessage() == "folder: aligned 3 items, 1.5 items/s, 2s so far"


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (42, "42s"), (185, "3m05s"), (3720, "1h02m")])
def test_durations_read_short(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
