"""Crypto-gateway nonces are refused across processes: two real `kassa serve` processes on
one database receive the same signed request at the same moment, and exactly one of them
accepts it. On PostgreSQL (the production shape) and on one SQLite file."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, func, select

from kassa.accounts import service as accounts
from kassa.config import Settings
from kassa.context import build_context
from kassa.db.database import open_database
from kassa.db.migrate import upgrade
from kassa.db.tables import facade_nonces, facade_orders
from tests.facades.cryptogw_shop import CREATE, CryptoClient
from tests.support.harness import (
    free_port,
    fresh_postgres_database,
    make_settings,
    subprocess_env,
)
from tests.support.processes import Reader, wait_until

ROUNDS = 20


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kassa.sqlite3'}"
        return
    request.getfixturevalue("pg_url")  # skips (or fails, in CI) without PostgreSQL
    with fresh_postgres_database() as url:
        yield url


class ServeProcess:
    """One `python -m kassa serve` on loopback; killed by its own pid when closed."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = subprocess_env(settings)
        env.update({"KASSA_RATE_LIMIT": "100000/second", "KASSA_PUBLIC_URL": self.base_url})
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kassa", "serve", "--port", str(self.port), "--no-worker",
             "--no-migrate", "--log-level", "warning"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(settings.data_dir))

    def log_tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-30:])

    def wait_ready(self) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"kassa serve exited early:\n{self.log_tail()}")
            try:
                return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, timeout=30, interval=0.1, message=self.log_tail)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def two_servers(settings: Settings, log_dir: Path) -> Iterator[list[ServeProcess]]:
    procs: list[ServeProcess] = []
    try:
        for i in range(2):
            procs.append(ServeProcess(settings, log_dir / f"serve-{i}.log"))
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.close()


def new_merchant(settings: Settings) -> tuple[str, str, str]:
    """(account id, test API key, secret), made the way `kassa accounts create` does."""
    ctx = build_context(settings)
    db = open_database(settings.resolved_database_url, pool_size=2,
                       sqlite_synchronous=settings.sqlite_synchronous)
    try:
        account = db.write_sync(lambda conn: accounts.create_account(
            conn, ctx, name="Two Processes", tier="verified"))
    finally:
        db.close()
    [c] = [c for c in account.protocol_credentials
           if c.protocol == "cryptogw" and c.mode == "test"]
    return account.account_id, c.id, c.secret


def order_counts(conn: Connection, account_id: str) -> dict[str, int]:
    rows = conn.execute(
        select(facade_orders.c.merchant_order_no, func.count())
        .where(facade_orders.c.account_id == account_id)
        .group_by(facade_orders.c.merchant_order_no)).all()
    return {str(no): int(n) for no, n in rows}


def test_same_nonce_at_two_processes_at_once_is_accepted_once(database_url: str,
                                                              tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url)
    upgrade(settings.resolved_database_url)  # once, before both start (--no-migrate)
    account_id, api_key, secret = new_merchant(settings)
    reader = Reader(settings)
    with two_servers(settings, tmp_path) as servers:
        clients = [CryptoClient(s.base_url, api_key, secret) for s in servers]
        try:
            for c in clients:  # connected before any race
                assert c.http.get("/healthz").status_code == 200
            # One after the other: what one process accepted, the other refuses.
            payload = {"order_no": "Serial000001", "currency": "USD", "amount": "20.00",
                       "chain_type": "bsc", "notify_url": "http://127.0.0.1:9/notify"}
            raw = json.dumps(payload).encode()
            headers = clients[0].headers(raw)
            first = clients[0].send(CREATE, raw, headers)
            assert first.status_code == 200, first.text
            again = clients[1].send(CREATE, raw, headers)
            assert (again.status_code, again.json()["code"]) == (401, 10002), again.text

            # At the same moment, ROUNDS times, each round its own order_no and nonce.
            outcomes: list[list[tuple[int, Any, float, float]]] = []
            for i in range(ROUNDS):
                order_no = f"Race{i:02d}{secrets.token_hex(6)}"
                payload = {**payload, "order_no": order_no}
                raw = json.dumps(payload).encode()
                headers = clients[0].headers(raw)
                outcomes.append(_race(clients, raw, headers))
        finally:
            for c in clients:
                c.close()
    for i, replies in enumerate(outcomes):
        assert sorted(r[0] for r in replies) == [200, 401], (i, replies)
        assert sorted(r[1]["code"] for r in replies) == [10000, 10002], (i, replies)
    # The two requests of a round were in flight together (most rounds, at least).
    overlapping = [max(r[2] for r in replies) < min(r[3] for r in replies)
                   for replies in outcomes]
    assert sum(overlapping) >= ROUNDS // 2, overlapping
    ids = [r[1]["data"]["id"] for replies in outcomes for r in replies if r[0] == 200]
    assert len(set(ids)) == ROUNDS

    try:
        counts = reader(lambda conn: order_counts(conn, account_id))
        nonces = reader(lambda conn: conn.execute(
            select(func.count()).select_from(facade_nonces)).scalar_one())
    finally:
        reader.close()
    assert len(counts) == ROUNDS + 1  # Serial000001 and one per round
    assert set(counts.values()) == {1}, counts
    assert nonces == ROUNDS + 1  # (a fresh database: this merchant's nonces only)


def _race(clients: list[CryptoClient], raw: bytes, headers: dict[str, str]
          ) -> list[tuple[int, Any, float, float]]:
    """The same bytes and headers to each process, released together."""
    gate = threading.Barrier(len(clients))
    out: list[tuple[int, Any, float, float]] = [(0, None, 0.0, 0.0)] * len(clients)

    def send(k: int) -> None:
        gate.wait(timeout=10)
        started = time.monotonic()
        r = clients[k].send(CREATE, raw, headers)
        out[k] = (r.status_code, r.json(), started, time.monotonic())

    threads = [threading.Thread(target=send, args=(k,)) for k in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out

