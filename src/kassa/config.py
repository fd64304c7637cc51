"""Settings from the environment (prefix KASSA_), with defaults that run as-is."""

from __future__ import annotations

import secrets
from decimal import Decimal
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KASSA_", extra="ignore")

    # Where data lives. The embedded default is one SQLite file in data_dir.
    data_dir: Path = Path("kassa-data")
    database_url: str = ""
    # Server key: peppers the key/secret hashes and derives per-account signing
    # secrets. Read from here, else from <data_dir>/server.key (made on first run).
    secret_key: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""  # base of payment_url / qr_code_url; default http://host:port

    # Money
    platform_fee_bps: int = Field(2000, ge=0, le=10_000)
    # CNY per unit. USDT's rate also converts crypto-gateway orders into USDT (seed 002).
    fx_rates: dict[str, Decimal] = {"USD": Decimal("7.1000"), "EUR": Decimal("7.7000"),
                                    "USDT": Decimal("7.1000")}
    min_deposit_cents: int = 10_000
    min_amount_cents: int = 1_000
    max_amount_cents: int = 5_000_000
    daily_limit_cents: dict[str, int | None] = {
        "standard": 10_000_000,
        "verified": 50_000_000,
        "enterprise": None,
    }

    # Sandbox channel: test-mode payments settle by themselves after this delay.
    sandbox_settle_seconds: float = 5.0
    # ... and test-mode refunds through the original channel are confirmed after this delay.
    sandbox_refund_seconds: float = 5.0

    # Protocol facades (seed 003 EasyPay, seed 002 crypto gateway): an order they take is
    # credited to the merchant's available balance less this channel fee (basis points, by
    # payment method).
    collection_fee_bps: dict[str, int] = {"alipay": 60, "wechat": 60, "usdt": 100}
    # Their notifications (notify_url) are retried on the seed's schedule, then given up
    # (the attempts and a resend are in the webhook log).
    notify_retry_schedule: list[float] = [0, 15, 15, 30, 180, 1800, 1800, 1800, 1800, 3600]
    # Crypto-gateway requests: X-Timestamp within this many seconds of the server's clock.
    cryptogw_max_skew_seconds: int = 300

    # Live upstreams (SPEC §8). An EasyPay-style aggregator (seed 003) for the methods in
    # epay_upstream_methods, and a crypto gateway (seed 002) for usdt. Unset: live orders for
    # those methods are refused (payment_method_unavailable).
    epay_upstream_url: str = ""  # e.g. https://zpayz.cn (submit.php, mapi.php, api.php below it)
    epay_upstream_pid: str = ""
    epay_upstream_key: SecretStr | None = None
    epay_upstream_methods: list[str] = ["alipay", "wechat"]
    # Create orders through mapi.php (JSON with the payment link); False: a signed
    # submit.php link, for aggregators without mapi.
    epay_upstream_mapi: bool = True
    cryptogw_upstream_url: str = ""  # base of POST /v1/payment and /v1/payment/query
    cryptogw_upstream_api_key: SecretStr | None = None
    cryptogw_upstream_secret: SecretStr | None = None
    # Where upstreams notify Kassa (…/notify/epay, …/notify/cryptogw); default public_url.
    upstream_notify_url: str = ""
    upstream_timeout_seconds: float = 10.0
    # Active queries of pending live orders: first after poll_min, then spaced out (a
    # quarter of the order's age) up to poll_max, until the order completes or expires.
    upstream_poll_min_seconds: float = 10.0
    upstream_poll_max_seconds: float = 300.0

    # Rate limiting per API key ("limits" notation); Redis shares it across processes.
    rate_limit: str = "100/second"
    redis_url: str = ""

    # Workers
    run_worker: bool = True  # `kassa serve` runs the worker in-process
    worker_poll_seconds: float = 0.25
    worker_batch_size: int = 100
    job_lease_seconds: float = 60.0
    job_max_attempts: int = 12

    # Webhooks (SPEC §7): a 2xx within the timeout is success; otherwise retried after
    # these delays (the last one repeats) until give_up_seconds after the first attempt.
    webhook_timeout_seconds: float = 5.0
    webhook_retry_schedule: list[float] = [0, 15, 15, 30, 180, 1800, 1800, 1800, 1800, 3600]
    webhook_give_up_seconds: float = 3 * 86400
    webhook_lease_seconds: float = 30.0  # a delivery claimed by a dead worker is retried after
    webhook_max_in_flight: int = 64  # per worker process
    # ... and to one receiver (host:port, whatever the path or query), so one slow
    # receiver can't take every slot.
    webhook_max_in_flight_per_host: int = 8
    webhook_secret_grace_seconds: int = 86400  # default grace for the old secret on rotation
    # Networks a live-mode webhook may reach although they are private (an operator's own
    # receivers on an internal network), e.g. ["10.20.0.0/16"]. Empty: none.
    webhook_allowed_networks: list[str] = []

    # Merchant console (kassa.sessions): a session ends after this long unused, and in any
    # case this long after sign-in; sign-in attempts per client address.
    console_idle_seconds: int = 1800
    console_max_age_seconds: int = 12 * 3600
    console_login_rate_limit: str = "10/minute"

    # Caches and limits
    auth_cache_seconds: float = 10.0
    max_body_bytes: int = 64 * 1024
    idempotency_ttl_seconds: int = 24 * 3600
    db_pool_size: int = 12
    sqlite_synchronous: str = "FULL"

    @field_validator("webhook_retry_schedule", "notify_retry_schedule")
    @classmethod
    def _schedule(cls, v: list[float]) -> list[float]:
        if not v or any(d < 0 for d in v):
            raise ValueError("a retry schedule needs at least one delay, none negative")
        return v

    @field_validator("collection_fee_bps")
    @classmethod
    def _fees(cls, v: dict[str, int]) -> dict[str, int]:
        if any(not 0 <= bps <= 10_000 for bps in v.values()):
            raise ValueError("collection_fee_bps values are basis points, 0 to 10000")
        return v

    @field_validator("epay_upstream_methods")
    @classmethod
    def _epay_methods(cls, v: list[str]) -> list[str]:
        if any(m not in ("alipay", "wechat") for m in v):
            raise ValueError("epay_upstream_methods may hold alipay and wechat only")
        return v

    @field_validator("sqlite_synchronous")
    @classmethod
    def _sync_mode(cls, v: str) -> str:
        v = v.upper()
        if v not in {"FULL", "NORMAL", "EXTRA"}:
            raise ValueError("sqlite_synchronous must be FULL, NORMAL or EXTRA")
        return v

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            url = self.database_url
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'kassa.sqlite3').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def resolved_upstream_notify_url(self) -> str:
        return (self.upstream_notify_url or self.resolved_public_url).rstrip("/")

    def server_key(self) -> bytes:
        """The server key; generated once into the data dir when not configured."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value().encode()
        path = self.data_dir / "server.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()
