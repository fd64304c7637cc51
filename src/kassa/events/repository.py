"""All SQL about events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Row, insert, select

from kassa.core import ids
from kassa.core.clock import iso
from kassa.db.prepared import Prepared
from kassa.db.tables import events

_insert = Prepared(insert(events))


def record(conn: Connection, *, account_id: str, mode: str, event_type: str, object_id: str,
           sequence: int, data: dict[str, Any], callback_url: str | None, now: datetime,
           callback_protocol: str | None = None) -> str:
    """Record an event in the caller's transaction (it vanishes if that rolls back). The
    webhook fan-out turns it into deliveries: to `callback_url` (as a Kassa webhook, or as
    `callback_protocol`'s notification) and the account's endpoints."""
    event_id = ids.event_id()
    payload = {
        "event_id": event_id,
        "event": event_type,
        "timestamp": iso(now),
        "sequence": sequence,
        "data": data,
    }
    _insert.run(conn, {
        "event_id": event_id, "account_id": account_id, "mode": mode, "event_type": event_type,
        "object_id": object_id, "sequence": sequence,
        "payload_json": orjson.dumps(payload).decode(),
        "callback_url": callback_url,
        "callback_protocol": callback_protocol,
        "fanout_pending": 1,
        "created_at": now,
    })
    return event_id


def for_object(conn: Connection, object_id: str) -> list[Row[Any]]:
    stmt = select(events).where(events.c.object_id == object_id).order_by(events.c.sequence)
    return list(conn.execute(stmt).all())
