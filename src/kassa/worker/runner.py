"""The worker loop: claim due jobs, run each in its own transaction, back off on failure;
beside it, the webhook deliverer (worker/deliveries.py).

Runs inside `kassa serve` (as an asyncio task) or alone as `kassa worker`; any
number of either may share one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Connection

from kassa.channels.base import UpstreamError
from kassa.context import ServiceContext
from kassa.db.database import Database
from kassa.facades import repository as facades
from kassa.idempotency import repository as idempotency
from kassa.worker import queue
from kassa.worker.deliveries import Deliverer
from kassa.worker.handlers import HANDLERS
from kassa.worker.upstream_jobs import ASYNC_HANDLERS

log = logging.getLogger("kassa.worker")

HOUSEKEEPING_EVERY_SECONDS = 600.0


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def backoff_seconds(attempts: int) -> float:
    return float(min(2 ** attempts, 3600))


class Worker:
    def __init__(self, db: Database, ctx: ServiceContext, *, name: str | None = None) -> None:
        self.db = db
        self.ctx = ctx
        self.name = name or worker_name()
        self._stop = asyncio.Event()
        self.runs = 0
        self.deliverer = Deliverer(db, ctx, name=self.name)

    def stop(self) -> None:
        self._stop.set()

    async def run_forever(self) -> None:
        s = self.ctx.settings
        last_housekeeping = 0.0
        loop = asyncio.get_running_loop()
        log.info("worker %s started", self.name)
        deliveries = asyncio.create_task(self.deliverer.run_forever(self._stop))
        while not self._stop.is_set():
            try:
                ran = await self.run_once()
                if loop.time() - last_housekeeping > HOUSEKEEPING_EVERY_SECONDS:
                    last_housekeeping = loop.time()
                    await self.housekeeping()
            except Exception:
                log.exception("worker loop error")
                ran = 0
            if ran < s.worker_batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=s.worker_poll_seconds)
        await deliveries
        log.info("worker %s stopped", self.name)

    async def run_once(self) -> int:
        s = self.ctx.settings
        now = self.ctx.clock.now()
        claimed = await self.db.write(lambda conn: queue.claim(
            conn, worker=self.name, now=now, limit=s.worker_batch_size,
            lease_seconds=s.job_lease_seconds))
        # Each job is its own unit of work: on SQLite they share one group commit, on
        # PostgreSQL they run side by side on the pool. A failing job affects only itself.
        await asyncio.gather(*(self.run_job(job) for job in claimed))
        return len(claimed)

    async def run_job(self, job: queue.ClaimedJob) -> None:
        if job.kind in ASYNC_HANDLERS:
            await self.run_async_job(job)
            return
        handler = HANDLERS.get(job.kind)

        def unit(conn: Connection) -> str:
            if not queue.take(conn, job):
                return "lease_lost"
            if handler is None:
                raise LookupError(f"no handler for job kind {job.kind!r}")
            now = self.ctx.clock.now()
            outcome = handler(conn, self.ctx, job.ref, now)
            queue.record_run(conn, job, worker=self.name, outcome=outcome, now=now)
            return outcome

        try:
            outcome = await self.db.write(unit)
            self.runs += 1
            log.debug("job %s %s %s -> %s", job.job_id, job.kind, job.ref, outcome)
        except Exception as exc:
            log.exception("job %s %s %s failed", job.job_id, job.kind, job.ref)
            await self._retry_later(job, exc)

    async def run_async_job(self, job: queue.ClaimedJob) -> None:
        """A job that waits on the network between its read and its write (upstream_jobs)."""
        async def commit(fn: Callable[[Connection], str]) -> str:
            def unit(conn: Connection) -> str:
                if not queue.take(conn, job):
                    return "lease_lost"
                outcome = fn(conn)
                queue.record_run(conn, job, worker=self.name, outcome=outcome,
                                 now=self.ctx.clock.now())
                return outcome
            outcome = await self.db.write(unit)
            self.runs += 1
            return outcome

        try:
            outcome = await ASYNC_HANDLERS[job.kind](self.db, self.ctx, job, commit)
            log.debug("job %s %s %s -> %s", job.job_id, job.kind, job.ref, outcome)
        except Exception as exc:
            log.warning("job %s %s %s failed: %s: %s", job.job_id, job.kind, job.ref,
                        type(exc).__name__, exc)
            await self._retry_later(job, exc)

    async def _retry_later(self, job: queue.ClaimedJob, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        # An upstream that can't be reached is waited for, however long it takes (at most an
        # hour apart): a refund must not be left in flight because an aggregator was down.
        dead = (job.attempts >= self.ctx.settings.job_max_attempts
                and not (isinstance(exc, UpstreamError) and exc.retry_allowed))
        retry_at = self.ctx.clock.now() + timedelta(seconds=backoff_seconds(job.attempts))
        await self.db.write(lambda conn: queue.release_failed(
            conn, job, error=error, retry_at=retry_at, dead=dead))

    async def housekeeping(self) -> None:
        cutoff = self.ctx.clock.now() - timedelta(seconds=self.ctx.settings.idempotency_ttl_seconds)
        purged = await self.db.write(lambda conn: idempotency.purge_older_than(conn, cutoff))
        if purged:
            log.info("purged %d expired idempotency keys", purged)
        now = self.ctx.clock.now()
        nonces = await self.db.write(lambda conn: facades.purge_nonces(conn, now=now))
        if nonces:
            log.info("purged %d expired crypto-gateway nonces", nonces)
