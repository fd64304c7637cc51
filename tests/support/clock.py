"""A clock for property tests."""

from __future__ import annotations

from datetime import datetime

from kassa.core.clock import Clock


class ManualClock(Clock):
    """Moves only when told, so a replayed example sees the same times and limit days."""

    def __init__(self, start: datetime) -> None:
        super().__init__()
        self.start = start

    def now(self) -> datetime:
        return self.start + self.offset
