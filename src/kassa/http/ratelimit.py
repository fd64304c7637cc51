"""Per-key rate limits with `limits`: in memory by default, Redis when configured."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from kassa.errors import RateLimited


class RateLimiter:
    def __init__(self, rate: str, redis_url: str = "") -> None:
        self.item = parse(rate)
        if redis_url:
            # redis-py is the Redis client Kassa depends on (limits defaults to coredis).
            self.storage = storage_from_string("async+" + redis_url, implementation="redispy")
        else:
            self.storage = storage_from_string("async+memory://")
        self.limiter = MovingWindowRateLimiter(self.storage)

    async def hit(self, identity: str) -> None:
        if not await self.limiter.hit(self.item, identity):
            stats = await self.limiter.get_window_stats(self.item, identity)
            retry_after = max(1, math.ceil(stats.reset_time - time.time()))
            raise RateLimited(
                f"Too many requests: the limit is {self.item}. Retry after {retry_after}s",
                retry_after=retry_after, limit=str(self.item))
