"""What the protocol facades share: their orders over the payment core, refunds, and the
credential behind a request. Services never commit; the facade's edge owns the transaction.

A facade order is a payment order without a task (purpose "collection") plus a row with
what the protocol needs: the merchant's own order number, where to notify, what to echo.
The merchant's order number is unique per merchant, mode and protocol: the same request
sent again returns the same order; the same number with another amount is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from kassa.accounts import service as accounts
from kassa.accounts.schemas import Principal
from kassa.context import ServiceContext
from kassa.core.signing import hashes_match
from kassa.core.urls import UrlError, check_url
from kassa.errors import ValidationError
from kassa.facades import repository
from kassa.payments import service as payments
from kassa.refunds import repository as refund_repository
from kassa.refunds import service as refunds
from kassa.upstreams.calls import UpstreamSlot

AnyRow = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a protocol request: the account and mode of its credential, and the KEY or
    secret the request is checked with."""

    principal: Principal
    secret: str
    credential: str  # the credential's lookup (PID, or the API key's keyed hash)


def caller(conn: Connection, ctx: ServiceContext, *, protocol: str, public_id: str
           ) -> Caller | None:
    found = accounts.resolve_protocol_credential(conn, ctx, protocol=protocol,
                                                 public_id=public_id)
    if found is None:
        return None
    principal, secret, lookup = found
    return Caller(principal=principal, secret=secret, credential=lookup)


def secrets_match(given: str, secret: str) -> bool:
    """A KEY sent in the clear (EasyPay order queries), compared in constant time."""
    return hashes_match(given, secret)


def order_with_secret(conn: Connection, ctx: ServiceContext, *, protocol: str, order_id: str
                      ) -> tuple[AnyRow, str, str] | None:
    """A facade order by Kassa's id alone (notifications, the browser's return), with the
    public id and current secret of the credential it came with."""
    order = repository.by_order_ids(conn, [order_id]).get(order_id)
    if order is None or order["protocol"] != protocol:
        return None
    found = accounts.credential_secret(conn, ctx, protocol=protocol,
                                       lookup=order["credential"])
    if found is None:  # the credential was revoked: nothing signs for it any more
        return None
    public_id, secret = found
    return order, public_id, secret


def checked_url(url: str, *, live: bool, field: str) -> str:
    """A notify or return URL: http(s), and in live mode https to a name or public address
    (the full DNS check is made before every notification)."""
    try:
        return check_url(url, live=live, field=field)
    except UrlError as exc:
        raise ValidationError(str(exc), field=field) from exc


@dataclass(frozen=True, slots=True)
class FacadeOrderRequest:
    protocol: str
    merchant_order_no: str
    amount: int  # minor units of currency
    currency: str
    payment_method: str  # Kassa's: alipay, wechat, usdt
    pay_type: str  # as the protocol named it (epay type, chain)
    name: str
    param: str | None
    notify_url: str
    return_url: str | None
    client_ip: str | None = None
    device: str | None = None
    channel_id: str | None = None
    amount_text: str | None = None
    quote_amount: str | None = None


class DuplicateMerchantOrder(Exception):
    """The merchant order number is taken by an order with other terms."""

    def __init__(self, existing: AnyRow) -> None:
        super().__init__(existing["order_id"])
        self.existing = existing


def same_terms(existing: AnyRow, request: FacadeOrderRequest) -> bool:
    return (existing["amount"], existing["currency"], existing["payment_method"]) == (
        request.amount, request.currency, request.payment_method)


def open_order(conn: Connection, ctx: ServiceContext, *, caller: Caller,
               request: FacadeOrderRequest, slot: UpstreamSlot | None = None) -> AnyRow:
    """The order for a merchant order number: the existing one if it has the same terms (a
    client sending its request again), else a new payment order without a task. In live
    mode its money is collected through the configured upstream (`slot`, see
    channels.base.UpstreamSlot)."""
    principal = caller.principal
    existing = repository.find_by_merchant_no(
        conn, account_id=principal.account_id, mode=principal.mode, protocol=request.protocol,
        merchant_order_no=request.merchant_order_no)
    if existing is not None:
        if not same_terms(existing, request):
            raise DuplicateMerchantOrder(existing)
        return existing
    order = payments.open_collection(
        conn, ctx, principal=principal, amount=request.amount, currency=request.currency,
        method=request.payment_method, return_url=request.return_url,
        notify_url=request.notify_url, protocol=request.protocol,
        description=f"{request.protocol} order {request.merchant_order_no}: {request.name}",
        slot=slot)
    row = {
        "order_id": order["order_id"], "account_id": principal.account_id,
        "mode": principal.mode, "protocol": request.protocol,
        "merchant_order_no": request.merchant_order_no, "credential": caller.credential,
        "pay_type": request.pay_type, "name": request.name, "param": request.param,
        "notify_url": request.notify_url, "return_url": request.return_url,
        "client_ip": request.client_ip, "device": request.device,
        "channel_id": request.channel_id, "amount_text": request.amount_text,
        "quote_amount": request.quote_amount,
        "created_at": order["created_at"],
    }
    repository.insert_facade_order(conn, row)
    return {**order, **row}


def find_order(conn: Connection, *, caller: Caller, protocol: str, order_id: str | None,
               merchant_order_no: str | None, for_update: bool = False) -> AnyRow | None:
    """By Kassa's order id or the merchant's order number (both given: both must match)."""
    p = caller.principal
    found = None
    if order_id:
        found = repository.find_by_order_id(conn, account_id=p.account_id, mode=p.mode,
                                            protocol=protocol, order_id=order_id,
                                            for_update=for_update)
    elif merchant_order_no:
        found = repository.find_by_merchant_no(conn, account_id=p.account_id, mode=p.mode,
                                               protocol=protocol,
                                               merchant_order_no=merchant_order_no,
                                               for_update=for_update)
    if found is not None and merchant_order_no and found["merchant_order_no"] != (
            merchant_order_no):
        return None
    return found


def refund(conn: Connection, ctx: ServiceContext, *, order: AnyRow, amount: int,
           merchant_refund_no: str | None) -> tuple[dict[str, Any], bool]:
    """Refund (part of) a paid facade order through its channel, from the available balance
    it was credited to (with its channel fee, in proportion). `order` is locked by the
    caller. With the merchant's refund number, a repeat is the same refund: (refund,
    False); a number used for another amount is an error."""
    if merchant_refund_no is not None:
        found = refund_repository.by_merchant_refund_no(
            conn, order_id=order["order_id"], merchant_refund_no=merchant_refund_no)
        if found is not None:
            if found["amount"] != amount:
                raise ValidationError("the refund number was used for another amount",
                                      field="out_refund_no")
            return found, False
    made = refunds.refund_order(conn, ctx, order=order, amount=amount, reason="other",
                                reason_detail=f"{order['protocol']} refund request",
                                refund_method="original", test_outcome=None,
                                merchant_refund_no=merchant_refund_no)
    return made, True
