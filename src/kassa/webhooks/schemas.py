"""Pydantic I/O of the webhook API (endpoints, events, deliveries, the secret) and its
wire rendering. The deliveries themselves carry the event's stored payload unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kassa.core.clock import iso

# Every event Kassa records (SPEC §7, plus the task events).
EVENT_TYPES = (
    "payment.created", "payment.completed", "payment.failed", "payment.expired",
    "refund.created", "refund.completed", "refund.failed",
    "task.approved", "task.failed", "task.cancelled",
)
ALL_EVENTS = "*"
CALLBACK = "callback"  # the delivery target of an order's (or task's) callback_url
WEBHOOK = "webhook"  # a delivery's protocol: Kassa's signed JSON (else "epay", "cryptogw")
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_ENDPOINTS = 20  # per account and mode
MAX_GRACE_SECONDS = 7 * 86400


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_event_types(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if not value:
        raise ValueError("list at least one event type, or \"*\" for all")
    unknown = [v for v in value if v != ALL_EVENTS and v not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; known: {', '.join(EVENT_TYPES)}")
    if ALL_EVENTS in value:
        return [ALL_EVENTS]
    return sorted(set(value), key=EVENT_TYPES.index)


class EndpointCreate(_Body):
    url: str = Field(min_length=1, max_length=2048,
                     description="https in live mode; test mode may use http and loopback")
    events: list[str] = Field([ALL_EVENTS], max_length=len(EVENT_TYPES) + 1,
                              description='Event types to receive; ["*"] for all')
    description: str | None = Field(None, max_length=200)
    status: Literal["enabled", "disabled"] = "enabled"

    _events = field_validator("events")(_check_event_types)


class EndpointUpdate(_Body):
    url: str | None = Field(None, min_length=1, max_length=2048)
    events: list[str] | None = Field(None, max_length=len(EVENT_TYPES) + 1)
    description: str | None = Field(None, max_length=200)
    status: Literal["enabled", "disabled"] | None = None

    _events = field_validator("events")(_check_event_types)


class NoBody(_Body):
    pass


class Endpoint(BaseModel):
    endpoint_id: str
    url: str
    events: list[str]
    description: str | None
    status: Literal["enabled", "disabled"]
    created_at: str
    updated_at: str


class EndpointList(BaseModel):
    data: list[Endpoint]


class Deleted(BaseModel):
    endpoint_id: str
    deleted: bool


class Attempt(BaseModel):
    number: int
    url: str
    attempted_at: str
    status_code: int | None = Field(description="The receiver's HTTP status; null if none")
    latency_ms: int
    response_excerpt: str | None = Field(description="The first bytes of the reply")
    error: str | None = Field(description="Why there was no 2xx (timeout, refused, ...)")


class Delivery(BaseModel):
    delivery_id: str
    event_id: str
    event: str
    endpoint_id: str | None = Field(description="null: the order's callback_url")
    url: str
    status: Literal["pending", "succeeded", "failed"]
    attempt_count: int
    next_attempt_at: str | None
    last_status_code: int | None
    last_error: str | None
    created_at: str
    completed_at: str | None
    attempts: list[Attempt]


class DeliveryPage(BaseModel):
    data: list[Delivery]
    has_more: bool
    next_cursor: str | None


class DeliveriesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: Literal["pending", "succeeded", "failed", "all"] = "all"
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    starting_after: str | None = Field(None, min_length=1, max_length=40,
                                       description="Cursor: a delivery_id from a page")


class EventsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_status: Literal["pending", "succeeded", "failed", "all"] = Field(
        "all", description="failed: events that never got through to some target")
    type: str | None = Field(None, max_length=40, description="One event type")
    object_id: str | None = Field(None, max_length=64)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    starting_after: str | None = Field(None, min_length=1, max_length=40,
                                       description="Cursor: an event_id from a page")


class Event(BaseModel):
    event_id: str
    event: str
    object_id: str
    sequence: int
    timestamp: str
    data: dict[str, Any]
    deliveries: list[Delivery]


class EventPage(BaseModel):
    data: list[Event]
    has_more: bool
    next_cursor: str | None


class ResendRequest(_Body):
    endpoint_id: str | None = Field(
        None, max_length=40, description="Only to this endpoint (it need not have had a "
                                         "delivery of this event yet); default: every target")


class ResendResult(BaseModel):
    event_id: str
    deliveries: list[Delivery]


class RotateSecretRequest(_Body):
    grace_period_seconds: int | None = Field(
        None, ge=0, le=MAX_GRACE_SECONDS,
        description="How long the old secret keeps signing too (default 24 h; 0: none)")


class WebhookSecret(BaseModel):
    webhook_secret: str
    previous_secret_expires_at: str | None = Field(
        description="Until then deliveries also carry the old secret's signature")


def render_endpoint(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "endpoint_id": row["endpoint_id"],
        "url": row["url"],
        "events": orjson.loads(row["event_types"]),
        "description": row["description"],
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def _iso_or_none(value: Any) -> str | None:
    return None if value is None else iso(value)


def render_attempt(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "number": row["number"],
        "url": row["url"],
        "attempted_at": iso(row["attempted_at"]),
        "status_code": row["status_code"],
        "latency_ms": row["latency_ms"],
        "response_excerpt": row["response_excerpt"],
        "error": row["error"],
    }


def render_delivery(row: Mapping[str, Any], event_type: str,
                    attempts: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "delivery_id": row["delivery_id"],
        "event_id": row["event_id"],
        "event": event_type,
        "endpoint_id": None if row["target"] == CALLBACK else row["target"],
        "protocol": row["protocol"],
        "url": row["url"],
        "status": row["status"],
        "attempt_count": row["attempts"],
        "next_attempt_at": (_iso_or_none(row["next_attempt_at"])
                            if row["status"] == "pending" else None),
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "created_at": iso(row["created_at"]),
        "completed_at": _iso_or_none(row["completed_at"]),
        "attempts": [render_attempt(a) for a in attempts],
    }
