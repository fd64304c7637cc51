"""Time, behind a seam so tests can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

_SHANGHAI_OFFSET = timedelta(hours=8)  # Asia/Shanghai: UTC+8, no DST since 1991
SHANGHAI = timezone(_SHANGHAI_OFFSET, "Asia/Shanghai")


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def shanghai_day(moment: datetime) -> str:
    """The Asia/Shanghai calendar day a moment falls on (daily limits count by it)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return (moment + _SHANGHAI_OFFSET).date().isoformat()


def iso(moment: datetime | None) -> str | None:
    """The seed's timestamp format: 2026-04-01T11:15:00Z."""
    if moment is None:
        return None
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds")[:-6] + "Z"  # drop "+00:00"


def add_business_days(moment: datetime, days: int) -> datetime:
    """`moment` plus `days` business days (Monday to Friday, counted in Asia/Shanghai),
    same time of day. A moment on a weekend counts from the next Monday."""
    local = moment.astimezone(SHANGHAI)
    while local.weekday() >= 5:
        local += timedelta(days=1)
    added = 0
    while added < days:
        local += timedelta(days=1)
        if local.weekday() < 5:
            added += 1
    return local.astimezone(UTC)
