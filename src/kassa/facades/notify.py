"""The notifications a facade order's notify_url receives, as the webhook deliverer sends
them: EasyPay's signed GET (seed 003), the crypto gateway's signed JSON POST (seed 002).
Both count as delivered only when the merchant answers `success`. They are built when
sent, from the order as it is then, signed with the current KEY of the order's credential.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from kassa.accounts import service as accounts
from kassa.accounts.schemas import Protocol
from kassa.context import ServiceContext
from kassa.facades import cryptogw, epay, repository

SUCCESS = b"success"


@dataclass(frozen=True, slots=True)
class Notice:
    method: str
    url: str
    body: bytes
    headers: Callable[[int], dict[str, str]]  # of the send time (Unix seconds)
    expect_reply: bytes


def _epay(order: Mapping[str, Any], pid: str, key: str) -> Notice:
    url = epay.with_query(order["notify_url"], epay.notify_params(order, pid, key))
    return Notice(method="GET", url=url, body=b"", headers=lambda _: {},
                  expect_reply=SUCCESS)


def _cryptogw(order: Mapping[str, Any], ctx: ServiceContext, secret: str) -> Notice:
    body = cryptogw.notification(order, ctx)
    return Notice(method="POST", url=order["notify_url"], body=body,
                  headers=lambda t: cryptogw.notification_headers(secret, body, t),
                  expect_reply=SUCCESS)


def notices(conn: Connection, ctx: ServiceContext, deliveries: Iterable[Mapping[str, Any]]
            ) -> dict[str, Notice | None]:
    """The request of each facade delivery, by delivery id; None where there is nothing
    to send any more (the order or its credential is gone)."""
    rows = list(deliveries)
    orders = repository.by_order_ids(conn, (d["object_id"] for d in rows))
    out: dict[str, Notice | None] = {}
    for d in rows:
        order = orders.get(d["object_id"])
        found = None if order is None else accounts.credential_secret(
            conn, ctx, protocol=order["protocol"], lookup=order["credential"])
        if order is None or found is None:
            out[d["delivery_id"]] = None
            continue
        public_id, secret = found
        # The notify_url the delivery holds (the order's) is where it goes.
        order = {**order, "notify_url": d["url"]}
        out[d["delivery_id"]] = (_epay(order, public_id, secret)
                                 if order["protocol"] == Protocol.EPAY
                                 else _cryptogw(order, ctx, secret))
    return out
