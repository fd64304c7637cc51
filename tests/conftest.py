"""Fixtures: a real server on loopback per database backend, and merchants by factory.

Every API test runs on SQLite and on PostgreSQL. PostgreSQL tests skip with the
reason when none is reachable, except in CI (KASSA_REQUIRE_POSTGRES=1) where
that is a failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.harness import (
    KassaServer,
    Merchant,
    fresh_postgres_database,
    make_settings,
    postgres_unavailable_reason,
)


def require_postgres() -> None:
    reason = postgres_unavailable_reason()
    if reason is not None:
        if os.environ.get("KASSA_REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def own_database_url(backend: str, tmp: Path) -> Iterator[str]:
    """A SQLite file in `tmp`, or a fresh PostgreSQL database, for one module's own server."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'kassa.sqlite3'}"
        return
    require_postgres()
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    require_postgres()
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _database_url(backend: str, tmp: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'kassa.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[KassaServer]:
    tmp = tmp_path_factory.mktemp(f"kassa-{backend}")
    settings = make_settings(tmp, _database_url(backend, tmp, request))
    srv = KassaServer(settings).start()
    yield srv
    srv.stop()


@pytest.fixture
def merchant(server: KassaServer) -> Merchant:
    """A fresh verified merchant: every test gets its own account, so tests never collide."""
    return server.merchant()


@pytest.fixture(autouse=True)
def _ledger_invariants(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that used a server, the whole ledger must still balance."""
    yield
    if "server" in request.fixturenames:
        srv: KassaServer = request.getfixturevalue("server")
        srv.check_ledger()
