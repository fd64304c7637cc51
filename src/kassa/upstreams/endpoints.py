"""HTTP only: where live upstreams notify Kassa (verify triad, 1).

`GET|POST /notify/epay` (seed 003's notification: a signed GET) and `POST /notify/cryptogw`
(seed 002's: a signed JSON POST). Each is verified by its adapter on the raw query and body
bytes, recorded once, applied, and answered the way that upstream expects (`success`), so
it stops retrying. A notification that is not genuine changes nothing and is answered
`fail`; one for an order Kassa does not know is answered `fail` too.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kassa.channels.base import InboundNotification, NotificationRejected
from kassa.errors import PayloadTooLarge
from kassa.facades.edge import FacadeEdge
from kassa.http.api import read_body
from kassa.upstreams import service

log = logging.getLogger("kassa.upstreams")


class NotifyEndpoints:
    def __init__(self, edge: FacadeEdge) -> None:
        self.edge = edge

    async def notify(self, request: Request) -> Response:
        ctx = self.edge.ctx
        name = request.path_params["channel"]
        upstream = ctx.channels.upstream(name)
        if upstream is None:
            return Response(b"fail", status_code=404, media_type="text/plain")
        try:
            body = await read_body(request, ctx.settings.max_body_bytes)
        except PayloadTooLarge:
            return Response(b"fail", status_code=413, media_type="text/plain")
        inbound = InboundNotification(
            method=request.method, query=request.scope.get("query_string", b""),
            headers={k.lower(): v for k, v in request.headers.items()}, body=body)
        try:
            verified = upstream.verify_notification(inbound)
        except NotificationRejected as exc:
            log.warning("rejected a %s notification: %s", name, exc)
            status, reply = upstream.notification_reply(False)
            return Response(reply, status_code=status, media_type="text/plain")
        now = ctx.clock.now()
        outcome = await self.edge.write(lambda conn: service.record_notification(
            conn, ctx, channel=name, notification=verified, now=now))
        log.info("%s notification %s: %s", name, verified.status.reference, outcome)
        status, reply = upstream.notification_reply(outcome != "unknown_order")
        return Response(reply, status_code=status, media_type="text/plain")

    def routes(self) -> list[Route]:
        return [Route("/notify/{channel}", self.notify, methods=["GET", "POST"])]
