"""An outage's log: one line when it starts, a summary every 30 s, one when it ends."""

from __future__ import annotations

import logging

import pytest

from cerulean.quota.outage import OutageLog


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_logs_once_then_summaries_then_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = OutageLog("the thing", "refused (503)", logging.getLogger("cerulean.t"), clock=clock)
    caplog.set_level(logging.INFO, logger="cerulean.t")
    for _ in range(1000):  # 1,000 refusals over 125 s
        log.failed(ConnectionError("Error 111 connecting to 127.0.0.1:1.\nConnection refused."))
        clock.now += 0.125
    assert log.down
    log.succeeded()
    log.succeeded()  # nothing more to say
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "the thing is unreachable (Error 111 connecting to 127.0.0.1:1. Connection refused.); "
        "requests are refused (503) until it returns"
    )
    assert messages[1] == (
        "the thing is still unreachable: 240 requests refused (503) in the last 30 s"
    )
    assert len(messages) == 6 and messages[5].startswith("the thing is reachable again after")
    assert "1000 requests were refused (503)" in messages[5]
    assert all(r.exc_info is None for r in caplog.records)
    assert not log.down
