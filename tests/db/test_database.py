"""The unit-of-work layer: group commit on SQLite, prepared statements on both databases."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, bindparam, insert, or_, select, update

from kassa.db.database import Database, SQLiteDatabase, open_database
from kassa.db.migrate import upgrade
from kassa.db.prepared import Prepared
from kassa.db.tables import accounts, jobs

# Far in the future, so that no worker sharing the database ever claims the test's jobs.
NOW = datetime(2100, 4, 1, 11, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    upgrade(url)
    db = open_database(url, pool_size=8, sqlite_synchronous="NORMAL")
    yield db
    db.close()


def _add_account(account_id: str, fail: bool):  # type: ignore[no-untyped-def]
    def unit(conn: Connection) -> str:
        conn.execute(insert(accounts).values(account_id=account_id, name="n", tier="standard",
                                             created_at=NOW))
        if fail:
            raise ValueError(f"unit {account_id} fails after writing")
        return account_id
    return unit


def _count(conn: Connection, prefix: str) -> set[str]:
    rows = conn.execute(select(accounts.c.account_id).where(
        accounts.c.account_id.like(f"{prefix}%")))
    return {r[0] for r in rows}


def test_a_failing_unit_rolls_back_alone_in_a_batch(database: Database) -> None:
    """Concurrent units share one commit on SQLite; a failure must undo only its own writes."""
    prefix = f"acc_gc_{database.dialect[:2]}_"

    async def run() -> list[str | BaseException]:
        units = [database.write(_add_account(f"{prefix}{i:03d}", fail=i % 3 == 0))
                 for i in range(90)]
        return await asyncio.gather(*units, return_exceptions=True)

    results = asyncio.run(run())
    failed = {i for i, r in enumerate(results) if isinstance(r, ValueError)}
    assert failed == {i for i in range(90) if i % 3 == 0}
    present = database.write_sync(lambda conn: _count(conn, prefix))
    assert present == {f"{prefix}{i:03d}" for i in range(90) if i % 3 != 0}
    if isinstance(database, SQLiteDatabase):
        assert database.batches < database.units  # requests really were committed together


def test_write_sync_raises_and_changes_nothing(database: Database) -> None:
    with pytest.raises(ValueError, match="fails after writing"):
        database.write_sync(_add_account("acc_sync_fail", fail=True))
    assert database.write_sync(lambda conn: _count(conn, "acc_sync_fail")) == set()


def test_reads_see_committed_writes(database: Database) -> None:
    async def run() -> set[str]:
        await database.write(_add_account("acc_read_1", fail=False))
        return await database.read(lambda conn: _count(conn, "acc_read_"))

    assert asyncio.run(run()) == {"acc_read_1"}


def test_prepared_statements_round_trip_types(database: Database) -> None:
    """Prepared keeps SQLAlchemy's own bind/result processing: aware datetimes, ints, NULLs,
    RETURNING, executemany and values written into the statement itself."""
    ins = Prepared(insert(jobs), columns=["kind", "ref", "run_at", "created_at"])
    later = NOW + timedelta(seconds=5)
    database.write_sync(lambda conn: ins.run_many(conn, [
        {"kind": "k.prep", "ref": "a", "run_at": NOW, "created_at": NOW},
        {"kind": "k.prep", "ref": "b", "run_at": later, "created_at": NOW},
    ]))
    get = Prepared(select(jobs).where(jobs.c.kind == bindparam("kind")).order_by(jobs.c.ref))
    rows = database.write_sync(lambda conn: get.all(conn, {"kind": "k.prep"}))
    assert [r["ref"] for r in rows] == ["a", "b"]
    assert rows[0]["run_at"] == NOW and rows[0]["run_at"].tzinfo is not None
    assert rows[1]["run_at"] == later
    assert rows[0]["locked_by"] is None and rows[0]["attempts"] == 0
    bump = Prepared(
        update(jobs)
        .where(jobs.c.kind == bindparam("k_kind"), or_(jobs.c.ref == "a", jobs.c.ref == "zz"))
        .values(attempts=jobs.c.attempts + 1, locked_by="w1", run_at=bindparam("k_at"))
        .returning(jobs.c.ref, jobs.c.attempts, jobs.c.run_at, jobs.c.locked_by))
    row = database.write_sync(lambda conn: bump.first(conn, {"k_kind": "k.prep", "k_at": later}))
    assert row == {"ref": "a", "attempts": 1, "run_at": later, "locked_by": "w1"}
    count = Prepared(update(jobs).where(jobs.c.kind == bindparam("k_kind")).values(dead=0))
    assert database.write_sync(lambda conn: count.run(conn, {"k_kind": "k.prep"})) == 2
    expanding = Prepared(select(jobs).where(jobs.c.ref.in_(["a", "b"])))
    with database.engine.connect() as conn, pytest.raises(ValueError, match="expanding"):
        expanding.first(conn, {})


def test_the_sqlite_writer_outlives_a_caller_whose_event_loop_closed(tmp_path: Path) -> None:
    """A write whose caller's event loop is gone by the time it commits (a server shutting
    down) must not take the writer thread with it: every later write waits on that thread."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    upgrade(url)
    db = open_database(url, pool_size=2, sqlite_synchronous="NORMAL")
    assert isinstance(db, SQLiteDatabase)
    release = threading.Event()

    def slow(conn: Connection) -> str:
        release.wait(10)
        return _add_account("acc_late", fail=False)(conn)

    async def submit_and_leave() -> None:
        task = asyncio.ensure_future(db.write(slow))
        await asyncio.sleep(0.05)  # queued and running in the writer
        task.cancel()

    try:
        asyncio.run(submit_and_leave())  # the loop is closed when this returns
        release.set()
        # Answered by the same writer thread (before the fix it had died: this hung).
        assert db.write_sync(_add_account("acc_after", fail=False)) == "acc_after"
        assert db.write_sync(lambda conn: sorted(conn.execute(
            select(accounts.c.account_id)).scalars())) == ["acc_after", "acc_late"]
    finally:
        db.close()
