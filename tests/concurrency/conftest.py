"""Fixtures of the concurrency tests: a database of their own per test, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_postgres
from tests.support.harness import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kassa.sqlite3'}"
        return
    require_postgres()
    with fresh_postgres_database() as url:
        yield url
