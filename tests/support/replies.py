"""Answers collected from many concurrent requests, and their tally."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class Reply:
    status: int
    content: bytes

    @property
    def body(self) -> Any:
        return orjson.loads(self.content)

    @property
    def code(self) -> str | None:
        """The error code of a seed-format error body, else None."""
        body = self.body
        return body["error"]["code"] if isinstance(body, dict) and "error" in body else None

    @property
    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = self.body["error"]
        return error


def statuses(replies: list[Reply]) -> Counter[tuple[int, str | None]]:
    return Counter((r.status, r.code) for r in replies)
