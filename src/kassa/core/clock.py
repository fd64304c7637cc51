"""Time, behind a seam so tests can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def shanghai_day(moment: datetime) -> str:
    """The Asia/Shanghai calendar day a moment falls on (daily limits count by it)."""
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d")


def iso(moment: datetime | None) -> str | None:
    """The seed's timestamp format: 2026-04-01T11:15:00Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
