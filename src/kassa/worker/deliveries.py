"""The webhook deliverer: fan recorded events out into deliveries, lease the due ones,
POST them concurrently, and record every attempt.

Database work happens in short transactions; the HTTP requests happen between them,
never inside one. A delivery is leased (`webhook_lease_seconds`) before it is sent: a
worker killed mid-request leaves the lease to run out, and another worker sends it
again (at least once, same event_id). Up to `webhook_max_in_flight` requests run at
once per process, at most `webhook_max_in_flight_per_host` to any one receiver (host and
port, whatever the path or query), so a slow or
dead receiver never holds up the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import Connection

from kassa.context import ServiceContext
from kassa.core.signing import webhook_headers
from kassa.db.database import Database
from kassa.facades import notify
from kassa.webhooks import repository
from kassa.webhooks import service as webhooks
from kassa.webhooks.schemas import CALLBACK, WEBHOOK
from kassa.webhooks.sender import delivery_client, post_event
from kassa.webhooks.ssrf import parse_networks

log = logging.getLogger("kassa.webhooks")

FANOUT_BATCH = 500
USER_AGENT = "Kassa-Webhooks/1.0"


@dataclass(frozen=True, slots=True)
class Claimed:
    delivery: Mapping[Any, Any]
    lease_token: str
    url: str | None  # None: the endpoint is gone or disabled (or the facade order's key)
    method: str
    body: bytes
    headers: Callable[[int], dict[str, str]]  # signed at the send time (Unix seconds)
    expect_reply: bytes | None  # a protocol notification's "success"


class AttemptRecorder:
    """Group commit for attempt outcomes: attempts that finish while a batch is being
    written go together in the next one (one transaction, two statements), instead of a
    transaction each. `record` returns once its attempt is committed."""

    def __init__(self, db: Database, ctx: ServiceContext, *, name: str) -> None:
        self.db = db
        self.ctx = ctx
        self.name = name
        self.pending: list[tuple[webhooks.FinishedAttempt, asyncio.Future[None]]] = []
        self.flushing: asyncio.Task[None] | None = None

    async def record(self, attempt: webhooks.FinishedAttempt) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((attempt, done))
        if self.flushing is None:
            self.flushing = asyncio.create_task(self._flush())
        await done

    def _write(self, attempts: list[webhooks.FinishedAttempt], conn: Connection) -> int:
        return webhooks.record_attempts(conn, self.ctx.settings, attempts, worker=self.name,
                                        now=self.ctx.clock.now())

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    kept = await self.db.write(functools.partial(
                        self._write, [a for a, _ in batch]))
                except Exception:
                    # One bad row must not sink the others' outcomes: each on its own.
                    log.exception("recording %d attempts failed; one by one", len(batch))
                    kept = 0
                    for attempt, done in batch:
                        try:
                            kept += await self.db.write(functools.partial(self._write,
                                                                          [attempt]))
                        except Exception as exc:
                            done.set_exception(exc)
                        else:
                            done.set_result(None)
                    continue
                if kept < len(batch):
                    log.warning("%d deliveries: lease lost during the attempt",
                                len(batch) - kept)
                for _, done in batch:
                    done.set_result(None)
        finally:
            self.flushing = None


class Deliverer:
    def __init__(self, db: Database, ctx: ServiceContext, *, name: str) -> None:
        self.db = db
        self.ctx = ctx
        self.name = name
        s = ctx.settings
        self.exempt = parse_networks(s.webhook_allowed_networks)
        self.client = delivery_client(timeout=s.webhook_timeout_seconds,
                                      max_in_flight=s.webhook_max_in_flight)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.per_host: Counter[str] = Counter()
        self.wake = asyncio.Event()
        self.sent = 0
        self.recorder = AttemptRecorder(db, ctx, name=name)

    async def run_forever(self, stop: asyncio.Event) -> None:
        poll = self.ctx.settings.worker_poll_seconds
        listener = (asyncio.create_task(self._listen(stop))
                    if self.db.engine.dialect.name == "postgresql" else None)
        try:
            while not stop.is_set():
                self.wake.clear()  # before looking: a wake-up during the round is kept
                try:
                    busy = await self.run_once()
                except Exception:
                    log.exception("webhook deliverer error")
                    busy = False
                if not busy:
                    waits = [asyncio.ensure_future(stop.wait()),
                             asyncio.ensure_future(self.wake.wait())]
                    await asyncio.wait(waits, timeout=poll,
                                       return_when=asyncio.FIRST_COMPLETED)
                    for w in waits:
                        w.cancel()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await self.close()

    async def _listen(self, stop: asyncio.Event) -> None:
        """PostgreSQL: LISTEN for committed events (a trigger NOTIFYs kassa_events), so a
        new event is fanned out at once instead of at the next poll."""
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute("LISTEN kassa_events")
                    self.wake.set()  # whatever committed before we listened
                    async for _ in conn.notifies():
                        self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll still runs; try again shortly
                log.warning("LISTEN kassa_events failed (%s); polling meanwhile",
                            type(exc).__name__)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self.in_flight:
            # Give requests under way their timeout to finish; the rest are sent again
            # by whoever takes the lease after it runs out.
            await asyncio.wait(self.in_flight, timeout=self.ctx.settings.webhook_timeout_seconds)
            for task in self.in_flight:
                task.cancel()
        await self.client.aclose()

    async def run_once(self) -> bool:
        """One round of fan-out and claiming; True if it found work (run again at once)."""
        s = self.ctx.settings
        # At most a host's cap a round: a claim of more than that, all to one host, would
        # mostly be handed back (row churn that slows every later claim).
        free = min(s.webhook_max_in_flight - len(self.in_flight),
                   s.webhook_max_in_flight_per_host)
        busy_hosts = [u for u, n in self.per_host.items() if n >= s.webhook_max_in_flight_per_host]
        now = self.ctx.clock.now()
        if not await self.db.read(lambda conn: repository.has_work(conn, now=now)):
            return False

        def unit(conn: Connection) -> tuple[int, list[Claimed]]:
            fanned = webhooks.fan_out(conn, now=now, limit=FANOUT_BATCH)
            if free <= 0:
                return fanned, []
            token, rows = repository.claim_due(conn, now=now, limit=free,
                                               lease_seconds=s.webhook_lease_seconds,
                                               busy_hosts=busy_hosts)
            # The claim caps nothing per host inside one batch: hand back what would put
            # more than the cap in flight to one host (after an outage, many are due at once).
            counts = Counter(self.per_host)
            kept: list[Any] = []
            extra: list[Any] = []
            for row in rows:
                counts[row["host"]] += 1
                (kept if counts[row["host"]] <= s.webhook_max_in_flight_per_host
                 else extra).append(row)
            repository.unclaim(conn, delivery_ids=[r["delivery_id"] for r in extra],
                               lease_token=token)
            return fanned, self._prepare(conn, token, kept)

        fanned, claimed = await self.db.write(unit)
        for job in claimed:
            self.per_host[job.delivery["host"]] += 1
            task = asyncio.create_task(self._deliver(job))
            self.in_flight.add(task)
            task.add_done_callback(self._done)
        return fanned > 0 or (free > 0 and len(claimed) == free)

    def _prepare(self, conn: Connection, token: str, rows: list[Any]) -> list[Claimed]:
        if not rows:
            return []
        now = self.ctx.clock.now()
        hooks = [r for r in rows if r["protocol"] == WEBHOOK]
        notices = notify.notices(conn, self.ctx,
                                 [r for r in rows if r["protocol"] != WEBHOOK])
        payloads = repository.payloads(conn, (r["event_id"] for r in hooks))
        versions = repository.secret_versions(conn, (r["account_id"] for r in hooks))
        endpoints = repository.endpoint_states(
            conn, (r["target"] for r in hooks if r["target"] != CALLBACK))
        claimed = []
        for r in rows:
            if r["protocol"] != WEBHOOK:
                notice = notices[r["delivery_id"]]
                claimed.append(Claimed(
                    delivery=r, lease_token=token, url=None if notice is None else notice.url,
                    method="GET" if notice is None else notice.method,
                    body=b"" if notice is None else notice.body,
                    headers=(lambda _: {}) if notice is None else notice.headers,
                    expect_reply=None if notice is None else notice.expect_reply))
                continue
            url: str | None = r["url"]  # an endpoint's pending deliveries follow its URL
            if r["target"] != CALLBACK:
                ep = endpoints.get(r["target"])
                if ep is None or ep["status"] != "enabled" or ep["deleted_at"] is not None:
                    url = None  # nothing more once disabled or deleted
            payload = payloads[r["event_id"]]
            claimed.append(Claimed(
                delivery=r, lease_token=token, url=url, method="POST",
                body=payload["payload_json"].encode(),
                headers=self._webhook_headers(r, payload["event_type"],
                                              payload["payload_json"].encode(),
                                              webhooks.signing_secrets(
                                                  self.ctx, versions[r["account_id"]], now)),
                expect_reply=None))
        return claimed

    @staticmethod
    def _webhook_headers(d: Mapping[Any, Any], event_type: str, body: bytes,
                         secrets: list[str]) -> Callable[[int], dict[str, str]]:
        def headers(timestamp: int) -> dict[str, str]:
            return {
                "Content-Type": "application/json",
                "X-Event-Id": d["event_id"],
                "X-Event-Type": event_type,
                "X-Delivery-Id": d["delivery_id"],
                "X-Delivery-Attempt": str(d["attempts"]),
                **webhook_headers(secrets, body, timestamp),
            }
        return headers

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake.set()  # a slot is free, and a later event of the same object may be due
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook delivery task failed", exc_info=task.exception())

    async def _deliver(self, job: Claimed) -> None:
        d = job.delivery
        try:
            if job.url is None:
                await self.db.write(lambda conn: webhooks.give_up(
                    conn, delivery=d, lease_token=job.lease_token,
                    reason=("the endpoint was disabled or deleted"
                            if d["protocol"] == WEBHOOK else
                            "the order's protocol credential was revoked"),
                    now=self.ctx.clock.now()))
                return
            attempted_at = self.ctx.clock.now()
            # The receiver checks a signature's time against its own clock: real time.
            headers = {"User-Agent": USER_AGENT, **job.headers(int(time.time()))}
            result = await post_event(
                self.client, job.url, body=job.body, headers=headers,
                live=d["mode"] == "live", resolver=self.ctx.resolver, exempt=self.exempt,
                timeout=self.ctx.settings.webhook_timeout_seconds, method=job.method,
                expect_reply=job.expect_reply)
            if result.succeeded:
                self.sent += 1
            log.debug("delivery %s attempt %s -> %s %s", d["delivery_id"], d["attempts"],
                      result.status_code, result.error or "")
            await self.recorder.record(webhooks.FinishedAttempt(
                delivery=d, lease_token=job.lease_token, result=result,
                attempted_at=attempted_at))
        finally:
            host = d["host"]
            self.per_host[host] -= 1
            if self.per_host[host] <= 0:
                del self.per_host[host]
