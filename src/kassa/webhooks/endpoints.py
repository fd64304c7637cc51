"""HTTP only: webhook endpoints, the event and delivery log, resend, the signing secret."""

from __future__ import annotations

import re

from sqlalchemy import Connection

from kassa.errors import EndpointNotFound, EventNotFound, LiveKeyRequired
from kassa.http.api import Api, Call, Unit, UnitResult
from kassa.webhooks import service
from kassa.webhooks.schemas import (
    Deleted,
    DeliveriesQuery,
    DeliveryPage,
    Endpoint,
    EndpointCreate,
    EndpointList,
    EndpointUpdate,
    Event,
    EventPage,
    EventsQuery,
    NoBody,
    ResendRequest,
    ResendResult,
    RotateSecretRequest,
    WebhookSecret,
)

api = Api()
TAGS = ("webhooks",)
ENDPOINT = "/api/v1/webhooks/endpoints/{endpoint_id}"
_ID = re.compile(r"[a-z]{2,3}_[0-9a-f]{20}")  # we_…, evt_…: what Kassa hands out


def _endpoint_id(call: Call) -> str:
    endpoint_id: str = call.request.path_params["endpoint_id"]
    if not _ID.fullmatch(endpoint_id) or not endpoint_id.startswith("we_"):
        raise EndpointNotFound(f"Webhook endpoint {endpoint_id[:40]} doesn't exist",
                               endpoint_id=endpoint_id[:40])
    return endpoint_id


def _event_id(call: Call) -> str:
    event_id: str = call.request.path_params["event_id"]
    if not _ID.fullmatch(event_id) or not event_id.startswith("evt_"):
        raise EventNotFound(f"Event {event_id[:40]} doesn't exist", event_id=event_id[:40])
    return event_id


@api.post("/api/v1/webhooks/endpoints", summary="Create a webhook endpoint", body=EndpointCreate,
          response=Endpoint, status=201, tags=TAGS)
async def create_endpoint(call: Call) -> Unit:
    """Every event of the wanted types (all by default) is POSTed to `url`, signed with the
    account's webhook secret. Live mode: https, and the host must resolve to a public
    address (checked now and before every delivery)."""
    request: EndpointCreate = call.body
    await service.vet_url(call.ctx, url=request.url, mode=call.principal.mode)

    def unit(conn: Connection) -> UnitResult:
        return 201, service.create_endpoint(conn, call.ctx, principal=call.principal,
                                            request=request)
    return unit


@api.get("/api/v1/webhooks/endpoints", summary="List webhook endpoints", response=EndpointList,
         tags=TAGS)
def list_endpoints(call: Call) -> Unit:
    return lambda conn: (200, service.list_endpoints(conn, principal=call.principal))


@api.get(ENDPOINT, summary="Get a webhook endpoint", response=Endpoint,
         errors=(EndpointNotFound,), tags=TAGS)
def get_endpoint(call: Call) -> Unit:
    endpoint_id = _endpoint_id(call)
    return lambda conn: (200, service.get_endpoint(conn, principal=call.principal,
                                                   endpoint_id=endpoint_id))


@api.post(ENDPOINT, summary="Update a webhook endpoint", body=EndpointUpdate, response=Endpoint,
          errors=(EndpointNotFound,), tags=TAGS, method="PATCH")
async def update_endpoint(call: Call) -> Unit:
    """Change the URL, the event types, the description or the status (`disabled`: its
    pending deliveries stop, and it gets no new ones)."""
    request: EndpointUpdate = call.body
    endpoint_id = _endpoint_id(call)
    if request.url is not None:
        await service.vet_url(call.ctx, url=request.url, mode=call.principal.mode)

    def unit(conn: Connection) -> UnitResult:
        return 200, service.update_endpoint(conn, call.ctx, principal=call.principal,
                                            endpoint_id=endpoint_id, request=request)
    return unit


@api.post(ENDPOINT, summary="Delete a webhook endpoint", body=NoBody, response=Deleted,
          errors=(EndpointNotFound,), tags=TAGS, method="DELETE")
def delete_endpoint(call: Call) -> Unit:
    endpoint_id = _endpoint_id(call)
    return lambda conn: (200, service.delete_endpoint(conn, call.ctx, principal=call.principal,
                                                      endpoint_id=endpoint_id))


@api.get(ENDPOINT + "/deliveries", summary="An endpoint's delivery log", response=DeliveryPage,
         query=DeliveriesQuery, errors=(EndpointNotFound,), tags=TAGS)
def endpoint_deliveries(call: Call) -> Unit:
    """Newest first, each with every attempt (time, status code, latency, first bytes of
    the reply)."""
    endpoint_id = _endpoint_id(call)
    return lambda conn: (200, service.endpoint_deliveries(
        conn, principal=call.principal, endpoint_id=endpoint_id, query=call.query))


@api.get("/api/v1/webhooks/events", summary="List events and their deliveries",
         response=EventPage, query=EventsQuery, tags=TAGS)
def list_events(call: Call) -> Unit:
    """Newest first. `delivery_status=failed` lists the events that never got through to
    some target (retries exhausted): resend them when the receiver is fixed."""
    return lambda conn: (200, service.list_events(conn, principal=call.principal,
                                                  query=call.query))


@api.get("/api/v1/webhooks/events/{event_id}", summary="Get an event and its delivery log",
         response=Event, errors=(EventNotFound,), tags=TAGS)
def get_event(call: Call) -> Unit:
    event_id = _event_id(call)
    return lambda conn: (200, service.get_event(conn, principal=call.principal,
                                                event_id=event_id))


@api.post("/api/v1/webhooks/events/{event_id}/resend", summary="Resend an event",
          body=ResendRequest, response=ResendResult, errors=(EventNotFound, EndpointNotFound),
          tags=TAGS)
def resend_event(call: Call) -> Unit:
    """Queue the event again, byte for byte (same event_id), to every target or to one
    endpoint; retried on the usual schedule from now."""
    event_id = _event_id(call)
    request: ResendRequest = call.body
    return lambda conn: (200, service.resend(conn, call.ctx, principal=call.principal,
                                             event_id=event_id,
                                             endpoint_id=request.endpoint_id))


@api.get("/api/v1/webhooks/secret", summary="Get the webhook signing secret",
         response=WebhookSecret, errors=(LiveKeyRequired,), tags=TAGS, need_secret=True)
def get_secret(call: Call) -> Unit:
    """The secret the X-Signature headers are made with, in both modes (live key and
    X-API-Secret only)."""
    return lambda conn: (200, service.get_secret(conn, call.ctx, principal=call.principal))


@api.post("/api/v1/webhooks/secret/rotate", summary="Rotate the webhook signing secret",
          body=RotateSecretRequest, response=WebhookSecret, errors=(LiveKeyRequired,),
          tags=TAGS)
def rotate_secret(call: Call) -> Unit:
    """A new secret signs from now on. During the grace period (default 24 h) the old one
    signs too: X-Signature-V2 carries both `v1=` signatures and X-Signature-Previous the
    old one, so receivers can switch over without rejecting a delivery."""
    request: RotateSecretRequest = call.body
    return lambda conn: (200, service.rotate_secret(
        conn, call.ctx, principal=call.principal,
        grace_period_seconds=request.grace_period_seconds))
