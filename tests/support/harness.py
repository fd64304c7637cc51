"""A real Kassa server on loopback, on SQLite or PostgreSQL, for API tests."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from kassa.accounts import service as accounts
from kassa.accounts.schemas import NewAccount
from kassa.app import create_app
from kassa.config import Settings
from kassa.context import ServiceContext, build_context
from kassa.db.database import Database, open_database
from kassa.db.migrate import upgrade
from kassa.ledger.service import check_invariants

PG_ADMIN_URL = os.environ.get("KASSA_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
SERVER_KEY = "test-server-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_unavailable_reason() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}: {exc}"
    return None


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database for one test session; dropped afterwards."""
    name = f"kassa_t_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def offline_resolver(host: str) -> list[str]:
    """Tests send no DNS queries: "localhost" is loopback and every other name fails."""
    if host == "localhost":
        return ["127.0.0.1"]
    raise OSError(f"tests resolve no names ({host})")


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "secret_key": SERVER_KEY,
        "sandbox_settle_seconds": 0.3,
        "sandbox_refund_seconds": 0.3,
        "worker_poll_seconds": 0.05,
        "rate_limit": "100000/second",
        "auth_cache_seconds": 0.0,
        "job_lease_seconds": 5.0,
        "sqlite_synchronous": "NORMAL",
        # Webhook retries in fractions of a second (the real schedule is tested by itself).
        "webhook_retry_schedule": [0, 0.2, 0.2, 0.5, 1.0],
        "webhook_give_up_seconds": 60.0,
        # ... and the protocol facades' notifications (the seed's schedule, in fractions).
        "notify_retry_schedule": [0, 0.2, 0.2, 0.5, 1.0],
    }
    values.update(overrides)
    return Settings(**values)


def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment for a `kassa` subprocess sharing this server's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
    env.update({
        "KASSA_DATABASE_URL": settings.database_url,
        "KASSA_DATA_DIR": str(settings.data_dir),
        "KASSA_SECRET_KEY": SERVER_KEY,
        "KASSA_SANDBOX_SETTLE_SECONDS": str(settings.sandbox_settle_seconds),
        "KASSA_WORKER_POLL_SECONDS": str(settings.worker_poll_seconds),
        "KASSA_JOB_LEASE_SECONDS": str(settings.job_lease_seconds),
        "KASSA_WEBHOOK_RETRY_SCHEDULE": json.dumps(settings.webhook_retry_schedule),
        "KASSA_WEBHOOK_GIVE_UP_SECONDS": str(settings.webhook_give_up_seconds),
        "KASSA_NOTIFY_RETRY_SCHEDULE": json.dumps(settings.notify_retry_schedule),
        "KASSA_WEBHOOK_LEASE_SECONDS": str(settings.webhook_lease_seconds),
    })
    return env


@dataclass
class Merchant:
    """An account with an HTTP client per mode."""

    account: NewAccount
    test: httpx.Client
    live: httpx.Client
    test_key: str
    test_secret: str
    live_key: str
    live_secret: str

    @property
    def account_id(self) -> str:
        return self.account.account_id

    def close(self) -> None:
        self.test.close()
        self.live.close()


class KassaServer:
    """uvicorn serving create_app() in a background thread, on 127.0.0.1."""

    def __init__(self, settings: Settings, *, run_worker: bool = True) -> None:
        self.settings = settings
        self.backend = "sqlite" if settings.is_sqlite else "postgres"
        upgrade(settings.resolved_database_url)
        self.ctx: ServiceContext = build_context(settings)
        self.ctx.resolver = offline_resolver
        self.db: Database = open_database(settings.resolved_database_url, pool_size=16,
                                          sqlite_synchronous=settings.sqlite_synchronous)
        self.app = create_app(settings, db=self.db, ctx=self.ctx, run_worker=run_worker)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings.public_url = self.base_url
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, loop="asyncio",
                                lifespan="on", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._merchants: list[Merchant] = []

    def start(self) -> KassaServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("Kassa test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        for m in self._merchants:
            m.close()
        self._server.should_exit = True
        self._thread.join(timeout=20)

    def client(self, key: str | None = None, secret: str | None = None) -> httpx.Client:
        headers = {}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if secret is not None:
            headers["X-API-Secret"] = secret
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def merchant(self, tier: str = "verified", name: str = "Test Merchant") -> Merchant:
        account = self.db.write_sync(
            lambda conn: accounts.create_account(conn, self.ctx, name=name, tier=tier))
        live, test = account.keys
        m = Merchant(
            account=account,
            test=self.client(test.api_key, test.api_secret),
            live=self.client(live.api_key, live.api_secret),
            test_key=test.api_key, test_secret=test.api_secret,
            live_key=live.api_key, live_secret=live.api_secret,
        )
        self._merchants.append(m)
        return m

    def check_ledger(self) -> None:
        result = self.db.write_sync(check_invariants)
        assert result.ok, result.problems

    def wait_for_status(self, client: httpx.Client, order_id: str, status: str,
                        timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            r = client.get("/api/v1/payment/query", params={"order_id": order_id})
            assert r.status_code == 200, r.text
            body = r.json()
            if body["status"] == status:
                return body
            time.sleep(0.05)
        raise AssertionError(f"order {order_id} stayed {body.get('status')}, wanted {status}")
