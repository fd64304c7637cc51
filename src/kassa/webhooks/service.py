"""Webhook rules: endpoints, the fan-out of events into deliveries, the retry schedule,
the delivery log, resends and the signing secret. Services never commit.

An event is recorded in the transaction of the change it announces (the outbox). The
worker's fan-out turns it into one delivery per target: the callback_url it was recorded
with, and every enabled endpoint of the account and mode that wants its type. Each
delivery is then tried until a 2xx, on SPEC §7's schedule, for up to 3 days.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection

from kassa.accounts.schemas import Principal
from kassa.config import Settings
from kassa.context import ServiceContext
from kassa.core import ids
from kassa.core.clock import iso
from kassa.core.signing import webhook_secret
from kassa.core.urls import UrlError
from kassa.errors import (
    AlreadyRotated,
    EndpointNotFound,
    EventNotFound,
    LiveKeyRequired,
    ValidationError,
)
from kassa.webhooks import repository
from kassa.webhooks.schemas import (
    ALL_EVENTS,
    CALLBACK,
    MAX_ENDPOINTS,
    WEBHOOK,
    DeliveriesQuery,
    EndpointCreate,
    EndpointUpdate,
    EventsQuery,
    render_delivery,
    render_endpoint,
)
from kassa.webhooks.ssrf import check_literal, check_target, parse_networks, url_host

AnyRow = Mapping[Any, Any]


# --- endpoints -------------------------------------------------------------------------------

async def vet_url(ctx: ServiceContext, *, url: str, mode: str) -> str:
    """A URL an endpoint may have: checked now, in live mode with its DNS answer (test mode
    takes any http(s) URL; a name that doesn't resolve fails its delivery attempts)."""
    exempt = parse_networks(ctx.settings.webhook_allowed_networks)
    try:
        if mode != "live":
            check_literal(url, live=False, exempt=exempt)
            return url
        await check_target(url, live=True, resolver=ctx.resolver, exempt=exempt)
    except UrlError as exc:
        raise ValidationError(str(exc), details=[{"field": "url", "message": str(exc)}]
                              ) from exc
    return url


def create_endpoint(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                    request: EndpointCreate) -> dict[str, Any]:
    if repository.count_endpoints(conn, account_id=principal.account_id,
                                  mode=principal.mode) >= MAX_ENDPOINTS:
        raise ValidationError(f"An account may have at most {MAX_ENDPOINTS} webhook endpoints "
                              "per mode; delete one first")
    now = ctx.clock.now()
    row = {
        "endpoint_id": ids.endpoint_id(), "account_id": principal.account_id,
        "mode": principal.mode, "url": request.url,
        "event_types": orjson.dumps(request.events).decode(),
        "description": request.description, "status": request.status,
        "created_at": now, "updated_at": now, "deleted_at": None,
    }
    repository.insert_endpoint(conn, row)
    return render_endpoint(row)


def _endpoint(conn: Connection, principal: Principal, endpoint_id: str,
              for_update: bool = False) -> AnyRow:
    row = repository.get_endpoint(conn, account_id=principal.account_id, mode=principal.mode,
                                  endpoint_id=endpoint_id, for_update=for_update)
    if row is None:
        raise EndpointNotFound(f"Webhook endpoint {endpoint_id} doesn't exist",
                               endpoint_id=endpoint_id)
    return row


def get_endpoint(conn: Connection, *, principal: Principal, endpoint_id: str) -> dict[str, Any]:
    return render_endpoint(_endpoint(conn, principal, endpoint_id))


def list_endpoints(conn: Connection, *, principal: Principal) -> dict[str, Any]:
    rows = repository.list_endpoints(conn, account_id=principal.account_id, mode=principal.mode)
    return {"data": [render_endpoint(r) for r in rows]}


def update_endpoint(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                    endpoint_id: str, request: EndpointUpdate) -> dict[str, Any]:
    _endpoint(conn, principal, endpoint_id, for_update=True)
    values: dict[str, Any] = {"updated_at": ctx.clock.now()}
    if request.url is not None:
        values["url"] = request.url
        repository.follow_endpoint(conn, endpoint_id=endpoint_id, url=request.url)
    if request.events is not None:
        values["event_types"] = orjson.dumps(request.events).decode()
    if "description" in request.model_fields_set:
        values["description"] = request.description
    if request.status is not None:
        values["status"] = request.status
    return render_endpoint(repository.update_endpoint(conn, endpoint_id, values))


def delete_endpoint(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                    endpoint_id: str) -> dict[str, Any]:
    """Deleted endpoints receive nothing more; their delivery log stays readable by event."""
    _endpoint(conn, principal, endpoint_id, for_update=True)
    now = ctx.clock.now()
    repository.update_endpoint(conn, endpoint_id, {"status": "disabled", "deleted_at": now,
                                                   "updated_at": now})
    return {"endpoint_id": endpoint_id, "deleted": True}


# --- fan-out ---------------------------------------------------------------------------------

def wants(endpoint: AnyRow, event_type: str) -> bool:
    types = orjson.loads(endpoint["event_types"])
    return ALL_EVENTS in types or event_type in types


def _delivery(event: AnyRow, *, target: str, url: str, now: datetime,
              protocol: str = WEBHOOK) -> dict[str, Any]:
    return {
        "delivery_id": ids.delivery_id(), "event_id": event["event_id"],
        "account_id": event["account_id"], "mode": event["mode"], "target": target,
        "protocol": protocol, "url": url, "host": url_host(url), "object_id": event["object_id"],
        "sequence": event["sequence"],
        "status": "pending", "attempts": 0, "next_attempt_at": now,
        "window_started_at": now, "window_attempts": 0, "created_at": now, "updated_at": now,
    }


def _deliveries_for(event: AnyRow, endpoints: Sequence[AnyRow], now: datetime
                    ) -> list[dict[str, Any]]:
    rows = []
    if event["callback_url"]:
        rows.append(_delivery(event, target=CALLBACK, url=event["callback_url"], now=now,
                              protocol=event["callback_protocol"] or WEBHOOK))
    for ep in endpoints:
        if (ep["account_id"], ep["mode"]) == (event["account_id"], event["mode"]) and wants(
                ep, event["event_type"]):
            rows.append(_delivery(event, target=ep["endpoint_id"], url=ep["url"], now=now))
    return rows


def fan_out(conn: Connection, *, now: datetime, limit: int) -> int:
    """Make the deliveries of up to `limit` recorded events; the number of events done."""
    if not repository.take_fanout_lock(conn):
        return 0
    pending = repository.events_to_fan_out(conn, limit=limit)
    if not pending:
        return 0
    endpoints = repository.enabled_endpoints(conn, ((e["account_id"], e["mode"])
                                                    for e in pending))
    rows = [d for e in pending for d in _deliveries_for(e, endpoints, now)]
    repository.insert_deliveries(conn, rows)
    repository.mark_fanned_out(conn, [e["event_id"] for e in pending])
    return len(pending)


# --- secrets ---------------------------------------------------------------------------------

def signing_secrets(ctx: ServiceContext, versions: AnyRow, now: datetime) -> list[str]:
    """The current secret, then the previous one while its grace period lasts."""
    account_id = versions["account_id"]
    found = [webhook_secret(ctx.server_key, account_id, versions["webhook_secret_version"])]
    until = versions["webhook_secret_previous_until"]
    previous = versions["webhook_secret_previous_version"]
    if previous is not None and until is not None and until > now:
        found.append(webhook_secret(ctx.server_key, account_id, previous))
    return found


def _secret_view(ctx: ServiceContext, account_id: str, versions: AnyRow, now: datetime
                 ) -> dict[str, Any]:
    until = versions["webhook_secret_previous_until"]
    live_until = until if until is not None and until > now else None
    return {
        "webhook_secret": webhook_secret(ctx.server_key, account_id,
                                         versions["webhook_secret_version"]),
        "previous_secret_expires_at": iso(live_until),
    }


def _live_only(principal: Principal) -> None:
    """The secret signs live deliveries too: test keys (easier to come by; the demo's are
    published) may neither read nor rotate it."""
    if principal.mode != "live":
        raise LiveKeyRequired("The webhook secret is read and rotated with the live API key "
                              "and secret")


def get_secret(conn: Connection, ctx: ServiceContext, *, principal: Principal
               ) -> dict[str, Any]:
    _live_only(principal)
    versions = repository.secret_versions(conn, [principal.account_id])[principal.account_id]
    return _secret_view(ctx, principal.account_id, versions, ctx.clock.now())


def secret_version(conn: Connection, *, principal: Principal) -> int:
    """The account's webhook secret version (a rotation form carries it)."""
    versions = repository.secret_versions(conn, [principal.account_id])[principal.account_id]
    return int(versions["webhook_secret_version"])


def rotate_secret(conn: Connection, ctx: ServiceContext, *, principal: Principal,
                  grace_period_seconds: int | None, version: int | None = None
                  ) -> dict[str, Any]:
    """A new secret signs from now on; the old one signs too until the grace period ends
    (both signatures are sent), so receivers can switch without losing a delivery. With
    `version` (secret_version as the caller saw it), a rotation since is AlreadyRotated."""
    _live_only(principal)
    now = ctx.clock.now()
    grace = (ctx.settings.webhook_secret_grace_seconds if grace_period_seconds is None
             else grace_period_seconds)
    until = now + timedelta(seconds=grace) if grace > 0 else None
    row = repository.rotate_secret(conn, account_id=principal.account_id, previous_until=until,
                                   from_version=version)
    if row is None:
        raise AlreadyRotated("The webhook secret has been rotated since this form was "
                             "shown; nothing was rotated again")
    return _secret_view(ctx, principal.account_id, {**row, "account_id": principal.account_id},
                        now)


# --- attempts and the retry schedule ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AttemptResult:
    url: str  # the last URL requested (after redirects)
    status_code: int | None
    latency_ms: int
    response_excerpt: str | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        """A 2xx (and, for a protocol notification, the reply it asks for)."""
        return (self.error is None and self.status_code is not None
                and 200 <= self.status_code < 300)


def retry_delay(settings: Settings, attempts_done: int, protocol: str = WEBHOOK
                ) -> float | None:
    """Seconds before the next attempt, after `attempts_done` attempts failed (counted
    since the retry window began: a resend starts the schedule over). Webhooks repeat the
    last delay until the give-up time; a protocol notification (EasyPay, crypto gateway)
    is sent once for each delay of its schedule and then no more (None)."""
    if protocol == WEBHOOK:
        schedule = settings.webhook_retry_schedule
        return schedule[min(attempts_done, len(schedule) - 1)]
    schedule = settings.notify_retry_schedule
    return schedule[attempts_done] if attempts_done < len(schedule) else None


def outcome(settings: Settings, delivery: AnyRow, result: AttemptResult, now: datetime
            ) -> dict[str, Any]:
    """The delivery row's new values after an attempt (always the same keys)."""
    values: dict[str, Any] = {"last_status_code": result.status_code,
                              "last_error": result.error, "updated_at": now}
    if result.succeeded:
        return {**values, "status": "succeeded", "completed_at": now, "next_attempt_at": None}
    delay = retry_delay(settings, delivery["window_attempts"], delivery["protocol"])
    next_at = None if delay is None else now + timedelta(seconds=delay)
    give_up_at = delivery["window_started_at"] + timedelta(
        seconds=settings.webhook_give_up_seconds)
    if next_at is None or next_at > give_up_at:
        return {**values, "status": "failed", "completed_at": now, "next_attempt_at": None}
    return {**values, "status": "pending", "completed_at": None, "next_attempt_at": next_at}


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    delivery: AnyRow  # the row as claimed
    lease_token: str
    result: AttemptResult
    attempted_at: datetime


def record_attempts(conn: Connection, settings: Settings, attempts: Sequence[FinishedAttempt],
                    *, worker: str, now: datetime) -> int:
    """Log attempts and move their deliveries on, in one go; returns how many deliveries
    were still ours (a lease that ran out belongs to whoever took it over)."""
    repository.record_attempts(conn, [{
        "delivery_id": a.delivery["delivery_id"], "number": a.delivery["attempts"],
        "url": a.result.url, "attempted_at": a.attempted_at,
        "status_code": a.result.status_code, "latency_ms": a.result.latency_ms,
        "response_excerpt": a.result.response_excerpt, "error": a.result.error,
        "worker": worker[:64],
    } for a in attempts])
    return repository.finish_many(conn, [
        (a.delivery["delivery_id"], a.lease_token, outcome(settings, a.delivery, a.result, now))
        for a in attempts])


def give_up(conn: Connection, *, delivery: AnyRow, lease_token: str, reason: str,
            now: datetime) -> bool:
    """A delivery that can't be attempted any more (its endpoint was disabled or deleted)."""
    return repository.finish(conn, delivery_id=delivery["delivery_id"], lease_token=lease_token,
                             values={"status": "failed", "last_error": reason[:300],
                                     "last_status_code": None,
                                     "completed_at": now, "updated_at": now,
                                     "next_attempt_at": None})


# --- the delivery log ------------------------------------------------------------------------

def _render_deliveries(conn: Connection, rows: Sequence[AnyRow]) -> list[dict[str, Any]]:
    attempts: dict[str, list[AnyRow]] = {}
    for a in repository.attempts_of(conn, [r["delivery_id"] for r in rows]):
        attempts.setdefault(a["delivery_id"], []).append(a)
    types = repository.event_types_of(conn, (r["event_id"] for r in rows))
    return [render_delivery(r, types.get(r["event_id"], ""), attempts.get(r["delivery_id"], []))
            for r in rows]


def _render_events(conn: Connection, rows: Sequence[AnyRow]) -> list[dict[str, Any]]:
    deliveries = _render_deliveries(conn, repository.deliveries_of_events(
        conn, [r["event_id"] for r in rows]))
    by_event: dict[str, list[dict[str, Any]]] = {}
    for d in deliveries:
        by_event.setdefault(d["event_id"], []).append(d)
    out = []
    for r in rows:
        payload = orjson.loads(r["payload_json"])
        out.append({"event_id": r["event_id"], "event": r["event_type"],
                    "object_id": r["object_id"], "sequence": r["sequence"],
                    "timestamp": payload["timestamp"], "data": payload["data"],
                    "deliveries": by_event.get(r["event_id"], [])})
    return out


def _event(conn: Connection, principal: Principal, event_id: str) -> AnyRow:
    row = repository.get_event(conn, account_id=principal.account_id, mode=principal.mode,
                               event_id=event_id)
    if row is None:
        raise EventNotFound(f"Event {event_id} doesn't exist", event_id=event_id)
    return row


def get_event(conn: Connection, *, principal: Principal, event_id: str) -> dict[str, Any]:
    return _render_events(conn, [_event(conn, principal, event_id)])[0]


def _page(rows: list[dict[str, Any]], limit: int, key: str) -> dict[str, Any]:
    more = len(rows) > limit
    rows = rows[:limit]
    return {"data": rows, "has_more": more, "next_cursor": rows[-1][key] if more else None}


def list_events(conn: Connection, *, principal: Principal, query: EventsQuery
                ) -> dict[str, Any]:
    after = None
    if query.starting_after is not None:
        after = repository.get_event(conn, account_id=principal.account_id,
                                     mode=principal.mode, event_id=query.starting_after)
        if after is None:
            raise ValidationError("starting_after is not an event of this account",
                                  details=[{"field": "starting_after", "message": "unknown"}])
    rows = repository.list_events(conn, account_id=principal.account_id, mode=principal.mode,
                                  delivery_status=query.delivery_status,
                                  event_type=query.type, object_id=query.object_id,
                                  after=after, limit=query.limit + 1)
    return _page(_render_events(conn, rows), query.limit, "event_id")


def endpoint_deliveries(conn: Connection, *, principal: Principal, endpoint_id: str,
                        query: DeliveriesQuery) -> dict[str, Any]:
    _endpoint(conn, principal, endpoint_id)
    after = None
    if query.starting_after is not None:
        after = repository.get_delivery(conn, account_id=principal.account_id,
                                        mode=principal.mode, delivery_id=query.starting_after)
        if after is None or after["target"] != endpoint_id:
            raise ValidationError("starting_after is not a delivery of this endpoint",
                                  details=[{"field": "starting_after", "message": "unknown"}])
    rows = repository.deliveries_of_target(conn, account_id=principal.account_id,
                                           mode=principal.mode, target=endpoint_id,
                                           status=query.status, after=after,
                                           limit=query.limit + 1)
    return _page(_render_deliveries(conn, rows), query.limit, "delivery_id")


def resend(conn: Connection, ctx: ServiceContext, *, principal: Principal, event_id: str,
           endpoint_id: str | None) -> dict[str, Any]:
    """Send an event again: its finished deliveries (or only the one to `endpoint_id`) go
    back in the queue with a fresh 3-day window. A target it has no delivery for yet (an
    endpoint made later, an event from before webhooks) gets one. Endpoints since disabled
    or deleted are left out."""
    event = _event(conn, principal, event_id)
    now = ctx.clock.now()
    deliveries = repository.deliveries_of_events(conn, [event_id])
    existing = {d["target"] for d in deliveries}
    if endpoint_id is not None:
        endpoint = _endpoint(conn, principal, endpoint_id)
        if endpoint["status"] != "enabled":
            raise ValidationError(f"Webhook endpoint {endpoint_id} is disabled; enable it "
                                  "first", endpoint_id=endpoint_id)
        targets = [endpoint_id]
        endpoint_urls = {endpoint_id: endpoint["url"]}
        new = [] if endpoint_id in existing else [
            _delivery(event, target=endpoint_id, url=endpoint["url"], now=now)]
    else:
        endpoints = repository.enabled_endpoints(conn, [(principal.account_id, principal.mode)])
        endpoint_urls = {ep["endpoint_id"]: ep["url"] for ep in endpoints}
        targets = [t for t in existing if t == CALLBACK or t in endpoint_urls]
        new = [d for d in _deliveries_for(event, endpoints, now) if d["target"] not in existing]
        if not targets and not new:
            raise ValidationError(f"Event {event_id} has no callback_url and no enabled "
                                  "endpoint wants it: there is nowhere to send it",
                                  event_id=event_id)
    repository.reopen(conn, event_id=event_id, targets=targets, now=now)
    for target in targets:  # a fixed endpoint URL is where a resend goes
        if target != CALLBACK:
            repository.follow_endpoint(conn, endpoint_id=target,
                                       url=endpoint_urls[target])
    repository.insert_deliveries(conn, new)
    if endpoint_id is None:
        # Every target has its delivery now; the fan-out must not make them again. (A
        # resend to one endpoint leaves the rest to the fan-out, if it hasn't run yet.)
        repository.mark_fanned_out(conn, [event_id])
    wanted = set(targets) | {d["target"] for d in new}
    rows = [d for d in repository.deliveries_of_events(conn, [event_id]) if d["target"] in wanted]
    return {"event_id": event_id, "deliveries": _render_deliveries(conn, rows)}
