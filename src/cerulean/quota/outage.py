"""How a limiter reports an outage of its shared store: once, then a summary, then recovery.

A Redis outage refuses (or, failing open, locally limits) every request; logging each one with
its traceback buried the log (about 55 lines a request). Instead: one WARNING line when the
outage starts, at most one summary line per :data:`SUMMARY_EVERY_S` seconds while it lasts
("N requests refused in the last 30 s"), one INFO line when it ends. No tracebacks: the
exception's one-line text says what failed (the tracebacks are at DEBUG).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["SUMMARY_EVERY_S", "OutageLog"]

SUMMARY_EVERY_S = 30.0


class OutageLog:
    """The outage state of one backend (``what``, e.g. "the rate limiter's Redis at host:6379");
    ``outcome`` says what happens to requests meanwhile ("refused", "limited by this process")."""

    def __init__(
        self,
        what: str,
        outcome: str,
        logger: logging.Logger,
        *,
        clock: Callable[[], float] = time.monotonic,
        every: float = SUMMARY_EVERY_S,
    ) -> None:
        self.what = what
        self.outcome = outcome
        self._logger = logger
        self._clock = clock
        self._every = every
        self._since: float | None = None
        self._summary_at = 0.0
        self._count = 0  # requests affected since the last summary
        self._total = 0

    @property
    def down(self) -> bool:
        """Whether the backend is in an outage now (its last call failed)."""
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        """One request met the outage."""
        now = self._clock()
        self._logger.debug("%s failed", self.what, exc_info=exc)
        if self._since is None:
            self._since = self._summary_at = now
            self._count, self._total = 0, 1
            self._logger.warning(
                "%s is unreachable (%s); requests are %s until it returns",
                self.what,
                _one_line(exc),
                self.outcome,
            )
            return
        self._count += 1
        self._total += 1
        if now - self._summary_at >= self._every:
            self._logger.warning(
                "%s is still unreachable: %d requests %s in the last %.0f s",
                self.what,
                self._count,
                self.outcome,
                now - self._summary_at,
            )
            self._summary_at, self._count = now, 0

    def succeeded(self) -> None:
        """A call went through: the outage, if any, is over."""
        if self._since is None:
            return
        lasted = self._clock() - self._since
        self._logger.info(
            "%s is reachable again after %.1f s; %d requests were %s meanwhile",
            self.what,
            lasted,
            self._total,
            self.outcome,
        )
        self._since = None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
