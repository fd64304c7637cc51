"""Tables. Every business row carries its account and mode; live and test never mix."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeEngine

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored as UTC and always come back timezone-aware.

    PostgreSQL: timestamptz. SQLite: the text SQLAlchemy's own DATETIME stores
    ("2026-04-01 11:00:00.000000", UTC), converted with the C-speed isoformat and
    fromisoformat rather than SQLAlchemy's Python string formatting (hot path).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(26))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value + "+00:00")  # stored as UTC
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


Money = BigInteger  # minor units

accounts = Table(
    "accounts",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("tier", String(20), nullable=False),
    Column("webhook_secret_version", Integer, nullable=False, server_default="1"),
    # After a rotation the previous secret still signs deliveries until this time.
    Column("webhook_secret_previous_version", Integer, nullable=True),
    Column("webhook_secret_previous_until", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("key_hint", String(40), nullable=False),  # prefix and last 4, for display
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    ForeignKeyConstraint(["account_id"], ["accounts.account_id"]),
    Index(None, "account_id"),
)

# Merchant console sessions (kassa.sessions): a signed-in browser, found by the keyed hash
# of its cookie's token (the token itself is never stored). A session is one account in
# one mode, as the API key it was opened with, and lasts no longer than that key.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("key_hash", String(64), nullable=False),  # the API key it was opened with
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),  # absolute end, whatever the use
    ForeignKeyConstraint(["account_id"], ["accounts.account_id"]),
    ForeignKeyConstraint(["key_hash"], ["api_keys.key_hash"]),
    Index(None, "account_id", "mode"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("title", String(200), nullable=False),
    Column("amount", Money, nullable=False),
    Column("currency", String(4), nullable=False),
    Column("payment_method", String(20), nullable=True),
    Column("return_url", Text, nullable=True),
    Column("callback_url", Text, nullable=True),
    Column("metadata_json", Text, nullable=True),
    Column("status", String(20), nullable=False),
    Column("current_order_id", String(40), nullable=True),
    Column("worker_id", String(64), nullable=True),  # set on approval
    Column("event_seq", Integer, nullable=False, server_default="0"),
    Column("closed_at", UTCDateTime, nullable=True),  # approved, failed or cancelled
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("account_id", "mode", "task_id"),
    ForeignKeyConstraint(["account_id"], ["accounts.account_id"]),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("task_id", String(64), nullable=True),
    # "payment" (for a task, into escrow), "deposit" (into the available balance) or
    # "collection" (a protocol facade's order: into the available balance, less a fee)
    Column("purpose", String(10), nullable=False, server_default="payment"),
    Column("amount", Money, nullable=False),
    Column("currency", String(4), nullable=False),
    Column("amount_cny", Money, nullable=False),
    Column("fx_rate", String(24), nullable=True),  # Decimal as text; CNY per unit
    Column("fee_bps", Integer, nullable=False),  # platform fee quoted at creation
    Column("payment_method", String(20), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("status", String(12), nullable=False),
    Column("return_url", Text, nullable=True),
    Column("callback_url", Text, nullable=True),
    # How callback_url is told: NULL, Kassa's webhooks; "epay" or "cryptogw", that protocol's
    # notification (a facade order's notify_url, told only of its payment).
    Column("callback_protocol", String(10), nullable=True),
    Column("metadata_json", Text, nullable=True),
    Column("description", String(300), nullable=False),  # "Payment for task: <title>"
    Column("card_brand", String(20), nullable=True),
    Column("card_last4", String(4), nullable=True),
    Column("sandbox_outcome", String(24), nullable=True),
    Column("failure_code", String(40), nullable=True),
    Column("failure_message", String(200), nullable=True),
    Column("transaction_id", String(40), nullable=True),
    Column("limit_day", String(10), nullable=False),  # Asia/Shanghai day it counts against
    # Where the money is: refunded (processing or completed) and released to the worker and
    # the platform, each in the order's currency and in CNY (refunded_cents/refunded_cny,
    # released_amount/released_cents; platform_fee_cny is the fee's part of the release).
    Column("refunded_cents", Money, nullable=False, server_default="0"),
    Column("refunded_cny", Money, nullable=False, server_default="0"),
    Column("released_cents", Money, nullable=False, server_default="0"),
    Column("released_amount", Money, nullable=False, server_default="0"),  # order's currency
    Column("platform_fee_cny", Money, nullable=False, server_default="0"),
    Column("event_seq", Integer, nullable=False, server_default="0"),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("paid_at", UTCDateTime, nullable=True),
    # A live upstream's order (SPEC §8): where the payer pays, and the current attempt's
    # reference (upstream_attempts); NULL for the sandbox and the balance.
    Column("pay_url", Text, nullable=True),
    Column("qr_code", Text, nullable=True),
    Column("upstream_ref", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.account_id"]),
    Index(None, "account_id", "mode", "created_at"),
    # One live order per task, enforced by the database itself.
    Index(
        "uq_orders_live_task",
        "account_id",
        "mode",
        "task_id",
        unique=True,
        sqlite_where=text("status IN ('pending','processing','completed','refunded')"),
        postgresql_where=text("status IN ('pending','processing','completed','refunded')"),
    ),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("order_id", String(40), nullable=False),
    Column("task_id", String(64), nullable=True),
    Column("amount", Money, nullable=False),  # in the order's currency
    Column("currency", String(4), nullable=False),
    Column("amount_cny", Money, nullable=False),
    Column("reason", String(20), nullable=False),
    Column("reason_detail", String(500), nullable=True),
    # "original" (back through the order's channel) or "balance" (the available balance)
    Column("refund_method", String(10), nullable=False),
    Column("payment_method", String(20), nullable=False),  # the order's, for "original"
    Column("status", String(12), nullable=False),  # processing, completed, failed
    Column("sandbox_outcome", String(12), nullable=True),
    Column("failure_code", String(40), nullable=True),
    Column("description", String(300), nullable=False),
    Column("estimated_arrival", UTCDateTime, nullable=False),
    # A collection's channel fee given back with this refund (CNY cents; 0 for others).
    Column("fee_returned_cny", Money, nullable=False, server_default="0"),
    # The merchant's own refund number (EasyPay out_refund_no): a repeat is the same refund.
    Column("merchant_refund_no", String(64), nullable=True),
    # The upstream's refund number, once a live upstream has paid the refund back.
    Column("upstream_refund_no", String(64), nullable=True),
    Column("event_seq", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["order_id"], ["orders.order_id"]),
    Index(None, "order_id"),
    UniqueConstraint("order_id", "merchant_refund_no"),
)

# The merchant's transaction history (GET /api/v1/payment/transactions): one row per
# payment, deposit and refund, written and updated with the object it describes. Paged
# newest first by the immutable (created_at, transaction_id).
transaction_history = Table(
    "transaction_history",
    metadata,
    Column("transaction_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("type", String(10), nullable=False),  # payment, refund, deposit
    Column("order_id", String(40), nullable=False),
    Column("refund_id", String(40), nullable=True),
    Column("task_id", String(64), nullable=True),
    Column("amount", Money, nullable=False),
    Column("currency", String(4), nullable=False),
    Column("status", String(10), nullable=False),  # pending, completed, failed
    Column("description", String(300), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_history_account_mode_created", "account_id", "mode", "created_at",
          "transaction_id"),
)

daily_volume = Table(
    "daily_volume",
    metadata,
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("day", String(10), nullable=False),
    Column("amount_cny", Money, nullable=False),
    PrimaryKeyConstraint("account_id", "mode", "day"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    Column("transaction_id", String(40), primary_key=True),
    Column("mode", String(4), nullable=False),
    Column("account_id", String(40), nullable=True),
    Column("kind", String(20), nullable=False),
    Column("order_id", String(40), nullable=True),
    Column("currency", String(4), nullable=False),
    Column("description", String(300), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "account_id", "mode", "created_at"),
    Index(None, "account_id", "mode", "kind"),
    Index(None, "order_id"),
)

ledger_postings = Table(
    "ledger_postings",
    metadata,
    Column("posting_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("transaction_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("ledger_account", String(120), nullable=False),
    Column("amount", Money, nullable=False),
    Column("currency", String(4), nullable=False),
    ForeignKeyConstraint(["transaction_id"], ["ledger_transactions.transaction_id"]),
    Index(None, "transaction_id"),
    Index(None, "mode", "ledger_account"),
)

# Cached balances, updated in the same transaction as the postings (checked by tests).
ledger_balances = Table(
    "ledger_balances",
    metadata,
    Column("mode", String(4), nullable=False),
    Column("ledger_account", String(120), nullable=False),
    Column("currency", String(4), nullable=False),
    Column("balance", Money, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("mode", "ledger_account", "currency"),
)

# The outbox: every announced state change, written with the change itself.
events = Table(
    "events",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("object_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("payload_json", Text, nullable=False),  # the exact bytes every delivery sends
    Column("callback_url", Text, nullable=True),  # the order's or task's, when recorded
    Column("callback_protocol", String(10), nullable=True),  # NULL: webhook; epay, cryptogw
    # 1 until the webhook fan-out has made this event's deliveries.
    Column("fanout_pending", Integer, nullable=False, server_default="0"),
    Column("created_at", UTCDateTime, nullable=False),
    # Object ids are unique per merchant and mode only (a task id is the merchant's choice).
    UniqueConstraint("account_id", "mode", "object_id", "sequence"),
    Index(None, "account_id", "mode", "created_at"),
    Index("ix_events_fanout_pending", "created_at",
          sqlite_where=text("fanout_pending = 1"), postgresql_where=text("fanout_pending = 1")),
)

# The account's webhook endpoints (besides each order's callback_url).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("endpoint_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),  # JSON list; ["*"] for every event
    Column("description", String(200), nullable=True),
    Column("status", String(10), nullable=False),  # enabled, disabled
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("deleted_at", UTCDateTime, nullable=True),
    Index(None, "account_id", "mode", "created_at"),
)

# One row per (event, target): the target is an endpoint id or "callback".
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("delivery_id", String(40), primary_key=True),
    Column("event_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("target", String(40), nullable=False),
    # "webhook" (Kassa's signed JSON), or a facade's notification: "epay", "cryptogw"
    Column("protocol", String(10), nullable=False, server_default="webhook"),
    Column("url", Text, nullable=False),
    Column("host", String(300), nullable=False),  # "name:port" of url: the in-flight cap's key
    Column("object_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("status", String(10), nullable=False),  # pending, succeeded, failed
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("window_started_at", UTCDateTime, nullable=False),  # retries stop 3 days after
    Column("window_attempts", Integer, nullable=False, server_default="0"),  # since then
    Column("locked_until", UTCDateTime, nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("last_status_code", Integer, nullable=True),
    Column("last_error", String(300), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("completed_at", UTCDateTime, nullable=True),
    UniqueConstraint("event_id", "target"),
    Index("ix_deliveries_due", "next_attempt_at",
          sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
    # Per-object order: a delivery waits while an earlier one of its object is pending.
    # object_id first and only pending rows, so the planner picks it even before the table
    # has statistics (a fresh database otherwise probes the account's index, O(n) a row).
    Index("ix_deliveries_object_pending", "object_id", "target", "sequence",
          sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'")),
    Index(None, "target", "created_at"),  # an endpoint's log (endpoint ids are unique)
)

# Every delivery attempt, as it happened.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("attempt_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("delivery_id", String(40), nullable=False),
    Column("number", Integer, nullable=False),
    Column("url", Text, nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("response_excerpt", Text, nullable=True),  # first bytes of the reply
    Column("error", String(300), nullable=True),
    Column("worker", String(64), nullable=False),
    Index(None, "delivery_id"),
)

# Credentials of the protocol facades (SPEC §1): an EasyPay PID (public, in every request)
# or a crypto-gateway API key (stored as its keyed hash). Their KEY / secret is derived
# from the server key and secret_version, never stored; version 0 is the seed's published
# sandbox KEY (the demo account's test PID only).
facade_credentials = Table(
    "facade_credentials",
    metadata,
    Column("protocol", String(10), nullable=False),  # epay, cryptogw
    Column("lookup", String(64), nullable=False),  # the PID, or the API key's keyed hash
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("secret_version", Integer, nullable=False),
    Column("hint", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    PrimaryKeyConstraint("protocol", "lookup"),
    ForeignKeyConstraint(["account_id"], ["accounts.account_id"]),
    Index(None, "account_id", "protocol", "mode"),
)

# What a facade order carries beyond the payment order itself: the merchant's own order
# number (unique per merchant, mode and protocol), where to notify, what to echo back.
facade_orders = Table(
    "facade_orders",
    metadata,
    Column("order_id", String(40), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("protocol", String(10), nullable=False),
    Column("merchant_order_no", String(64), nullable=False),
    Column("credential", String(64), nullable=False),  # the PID or key hash it came with
    Column("pay_type", String(20), nullable=False),  # epay "type", or the chain
    Column("name", String(255), nullable=False),  # product name, as the protocol echoes it
    Column("param", Text, nullable=True),  # echoed back (epay param, crypto meta)
    Column("notify_url", Text, nullable=False),
    Column("return_url", Text, nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("device", String(20), nullable=True),
    Column("channel_id", String(20), nullable=True),  # epay cid (recorded, not routed on)
    Column("amount_text", String(40), nullable=True),  # crypto: the amount as it was sent
    Column("quote_amount", String(40), nullable=True),  # crypto: what to collect, in USDT
    Column("created_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["order_id"], ["orders.order_id"]),
    UniqueConstraint("account_id", "mode", "protocol", "merchant_order_no"),
)

# Crypto-gateway request nonces, each usable once while its timestamp is acceptable.
facade_nonces = Table(
    "facade_nonces",
    metadata,
    Column("credential", String(64), nullable=False),
    Column("nonce", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("credential", "nonce"),
    Index(None, "expires_at"),
)

# Every order an upstream was asked to open for one of Kassa's orders (a retry opens
# another): `reference` is the merchant order number the upstream knows it by, and what
# its notifications and queries name.
upstream_attempts = Table(
    "upstream_attempts",
    metadata,
    Column("reference", String(32), primary_key=True),
    Column("order_id", String(40), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("trade_no", String(64), nullable=True),  # the upstream's own order number
    Column("pay_url", Text, nullable=False),
    Column("qr_code", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["order_id"], ["orders.order_id"]),
    Index(None, "order_id"),
)

# Upstream notifications that passed verification, each recorded once (a repeat is a
# no-op): what it said, and what Kassa made of it.
upstream_notifications = Table(
    "upstream_notifications",
    metadata,
    Column("dedupe_key", String(200), primary_key=True),
    Column("channel", String(20), nullable=False),
    Column("reference", String(64), nullable=False),
    Column("order_id", String(40), nullable=True),
    Column("state", String(12), nullable=False),
    Column("amount", Money, nullable=True),
    # completed, duplicate (already paid), review (see payment_reviews), unknown_order
    Column("outcome", String(20), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

# Payments Kassa would not apply by itself: money reported for an expired order, or an
# amount other than the order's. An operator resolves them (kassa orders reviews).
payment_reviews = Table(
    "payment_reviews",
    metadata,
    Column("review_id", String(40), primary_key=True),
    Column("order_id", String(40), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("reference", String(64), nullable=False),
    Column("reason", String(20), nullable=False),  # late_payment, amount_mismatch
    Column("reported_amount", Money, nullable=True),
    Column("source", String(12), nullable=False),  # notification, poll, verify
    Column("status", String(10), nullable=False),  # open, accepted, rejected
    Column("note", String(500), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("resolved_at", UTCDateTime, nullable=True),
    ForeignKeyConstraint(["order_id"], ["orders.order_id"]),
    UniqueConstraint("order_id", "reference", "reason"),
    Index(None, "status"),
)

# Seed 004's Payments resource: at most one per payment order, with the seed's integer id
# (never reused: AUTOINCREMENT on SQLite, a sequence on PostgreSQL). What it shows beyond
# these columns (status, amount, link, trade number) is read from its order.
payment_resources = Table(
    "payment_resources",
    metadata,
    Column("payment_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("order_id", String(40), nullable=False),
    Column("payer", String(100), nullable=True),
    Column("subject", String(255), nullable=False),
    Column("description", String(1000), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    ForeignKeyConstraint(["account_id"], ["accounts.account_id"]),
    ForeignKeyConstraint(["order_id"], ["orders.order_id"]),
    UniqueConstraint("order_id"),  # one Payment per order
    sqlite_autoincrement=True,
)

# Durable jobs, claimed with a lease (FOR UPDATE SKIP LOCKED on PostgreSQL).
jobs = Table(
    "jobs",
    metadata,
    Column("job_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("kind", String(40), nullable=False),
    Column("ref", String(64), nullable=False),
    Column("run_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("locked_by", String(64), nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("locked_until", UTCDateTime, nullable=True),
    Column("dead", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "dead", "run_at"),
    # job_runs is keyed by job_id: a finished (deleted) job's id must never be handed out
    # again. PostgreSQL sequences never reuse ids; SQLite does unless AUTOINCREMENT.
    sqlite_autoincrement=True,
)

# A record of every job run that changed something (audit, and proof of run-once).
job_runs = Table(
    "job_runs",
    metadata,
    Column("job_id", BigInteger, primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("ref", String(64), nullable=False),
    Column("worker", String(64), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", String(40), nullable=False),
    Column("mode", String(4), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("account_id", "mode", "idempotency_key"),
    Index(None, "created_at"),
)
