"""The migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command

from kassa.db.migrate import alembic_config, upgrade
from tests.support.harness import fresh_postgres_database


def test_migrations_match_the_tables(backend: str, tmp_path: Path,
                                     request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.sqlite3'}"
    else:
        request.getfixturevalue("pg_url")  # skips with the reason when PostgreSQL is absent
        with fresh_postgres_database() as pg:
            upgrade(pg)
            command.check(alembic_config(pg))  # raises if autogenerate would find a change
        return
    upgrade(url)
    command.check(alembic_config(url))
    upgrade(url)  # idempotent: a second upgrade is a no-op
