"""Prefixed public identifiers: ord_, ref_, txn_, evt_, we_ (endpoint), wd_ (delivery), acc_."""

from __future__ import annotations

import os
import re
import secrets
import uuid

# An order id as Kassa hands them out ("ord_" and lowercase hex; the column holds 40), for
# the edges that check a path before the database: anything else (NUL, a megabyte, "../x")
# names no order.
ORDER_ID = re.compile(r"ord_[0-9a-f]{1,36}")


def _random(n: int) -> str:
    """n random lowercase hex characters (4 bits each) from a single urandom call."""
    return os.urandom((n + 1) // 2).hex()[:n]


def new_id(prefix: str, length: int = 20) -> str:
    return f"{prefix}_{_random(length)}"


def order_id() -> str:
    return new_id("ord")


def transaction_id() -> str:
    return new_id("txn")


def refund_id() -> str:
    return new_id("ref")


def derived_transaction_id(object_id: str) -> str:
    """The transaction id of an order's payment or a refund's initiation: "ord_<hex>" ->
    "txn_<hex>". Known from the moment the object exists, so its history row, the ledger
    transaction and the id the API shows are one id."""
    return "txn_" + object_id.partition("_")[2]


def event_id() -> str:
    return new_id("evt")


def endpoint_id() -> str:
    return new_id("we")


def delivery_id() -> str:
    return new_id("wd")


def account_id() -> str:
    return new_id("acc", 16)


def task_id() -> str:
    """Tasks are identified by UUIDs, as the seed's API reference says."""
    return str(uuid.uuid4())


def api_key(mode: str) -> str:
    return f"zr_{mode}_{secrets.token_hex(24)}"


def api_secret() -> str:
    return f"sk_{secrets.token_urlsafe(32)}"


def review_id() -> str:
    return new_id("rev")


def upstream_reference(order_id: str, attempt: int) -> str:
    """The merchant order number an upstream knows attempt `attempt` of an order by:
    "ord_<20 hex>" -> "KS<20 HEX><attempt, 2 digits>", 24 letters and digits, which both
    upstream protocols accept (seed 002: 8-32 letters or digits)."""
    return f"KS{order_id.partition('_')[2].upper()}{attempt:02d}"
