"""Pydantic I/O of the balance endpoints and their wire rendering.

`*_rmb` fields are JSON numbers with exactly two decimals, written from the integer
cents (never through a float): 50000 -> 500.00.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import orjson
from pydantic import BaseModel, WithJsonSchema

from kassa.core.clock import iso
from kassa.core.money import Money

Yuan = Annotated[Decimal, WithJsonSchema({"type": "number", "multipleOf": 0.01,
                                          "description": "yuan, two decimals"})]


class AccountBalance(BaseModel):
    balance_cents: int
    balance_rmb: Yuan
    currency: str
    escrow_cents: int
    escrow_rmb: Yuan
    refunds_in_flight_cents: int
    lifetime_spent_cents: int
    lifetime_spent_rmb: Yuan
    last_updated: str


class WorkerBalance(BaseModel):
    worker_id: str
    balance_cents: int
    balance_rmb: Yuan
    currency: str
    last_updated: str


def yuan(cents: int) -> orjson.Fragment:
    """A JSON number with exactly two decimals, written from the integer cents."""
    return orjson.Fragment(Money(cents, "CNY").to_decimal_string().encode())


def render_account_balance(*, available: int, escrow: int, in_flight: int, spent: int,
                           last_updated: datetime) -> dict[str, object]:
    return {
        "balance_cents": available,
        "balance_rmb": yuan(available),
        "currency": "CNY",
        "escrow_cents": escrow,
        "escrow_rmb": yuan(escrow),
        "refunds_in_flight_cents": in_flight,
        "lifetime_spent_cents": spent,
        "lifetime_spent_rmb": yuan(spent),
        "last_updated": iso(last_updated),
    }


def render_worker_balance(*, worker_id: str, balance: int, last_updated: datetime
                          ) -> dict[str, object]:
    return {"worker_id": worker_id, "balance_cents": balance, "balance_rmb": yuan(balance),
            "currency": "CNY", "last_updated": iso(last_updated)}
