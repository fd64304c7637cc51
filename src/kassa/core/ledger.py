"""Double-entry ledger entries: two or more postings that sum to zero."""

from __future__ import annotations

from dataclasses import dataclass


class UnbalancedEntry(ValueError):
    pass


class InsufficientBalance(Exception):
    """A posting would take a merchant account below zero; nothing was written."""

    def __init__(self, account: str) -> None:
        super().__init__(f"{account} would go negative")
        self.account = account


@dataclass(frozen=True, slots=True)
class Posting:
    account: str
    amount: int  # signed minor units; debits positive, credits negative


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    currency: str
    postings: tuple[Posting, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.postings) < 2:
            raise UnbalancedEntry("an entry needs two or more postings")
        if any(isinstance(p.amount, bool) or not isinstance(p.amount, int) for p in self.postings):
            raise UnbalancedEntry("postings are integer minor units")
        if sum(p.amount for p in self.postings) != 0:
            raise UnbalancedEntry("postings must sum to zero")


def transfer(kind: str, currency: str, *, source: str, destination: str, amount: int,
             description: str = "") -> Entry:
    """Move `amount` from `source` to `destination` as one balanced entry."""
    if amount <= 0:
        raise UnbalancedEntry("a transfer moves a positive amount")
    return Entry(
        kind=kind,
        currency=currency,
        postings=(Posting(source, -amount), Posting(destination, amount)),
        description=description,
    )


# Ledger account names (SPEC §3), per mode.
def external(channel: str) -> str:
    return f"external:{channel}"


def customer_available(account_id: str) -> str:
    return f"customer:{account_id}:available"


def customer_escrow(account_id: str) -> str:
    return f"customer:{account_id}:escrow"


def customer_refunds_in_flight(account_id: str) -> str:
    return f"customer:{account_id}:refunds_in_flight"


def worker_payable(account_id: str, worker_id: str) -> str:
    """A worker is known by the merchant's own id for them, so the ledger account is
    scoped by the merchant: two merchants' "w1" are different people."""
    return f"worker:{account_id}/{worker_id}:payable"


PLATFORM_REVENUE = "platform:revenue"


def must_not_go_negative(account: str) -> bool:
    """Money a merchant holds with Kassa can never be overdrawn: debits of these accounts
    are conditional in the database itself (InsufficientBalance when short)."""
    return account.startswith("customer:")


def has_cached_balance(account: str) -> bool:
    """Per-merchant and per-worker balances are cached (read on every balance request);
    system accounts (external:*, platform:*) are derived from the postings when needed:
    as cached rows they would be one hot row that every payment of every merchant locks."""
    return account.startswith(("customer:", "worker:"))
