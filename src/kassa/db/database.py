"""Database access: units of work run on a real connection inside one transaction.

A *unit of work* is a plain function `fn(conn) -> T` holding all SQL of one
request or job. The edge (endpoint or job runner) hands it to `Database.write`
or `Database.read`, which owns the transaction; services never commit.

SQLite (embedded default): one writer thread commits batches of queued units
together (group commit), each unit inside its own SAVEPOINT so one failing
request rolls back alone. One writer per database file is what SQLite wants;
reads run on the event loop on a separate WAL reader connection.

PostgreSQL: every unit runs in a worker thread on a pooled connection, one
transaction per unit; PostgreSQL does the group commit of its WAL itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import NullPool, StaticPool

log = logging.getLogger("kassa.db")

T = TypeVar("T")
Unit = Callable[[Connection], T]

_MAX_BATCH = 256


class Database:
    """Runs units of work. Subclasses choose how."""

    dialect: str

    async def write(self, fn: Unit[T]) -> T:
        raise NotImplementedError

    async def read(self, fn: Unit[T]) -> T:
        raise NotImplementedError

    def write_sync(self, fn: Unit[T]) -> T:
        """Run a unit from synchronous code (CLI, tests) in its own transaction."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    @property
    def engine(self) -> Engine:
        raise NotImplementedError


def _sqlite_engine(url: str, *, begin: str | None, synchronous: str, static: bool) -> Engine:
    engine = create_engine(
        url,
        hide_parameters=True,  # values (metadata, URLs) never reach logs or error messages
        poolclass=StaticPool if static else NullPool,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite (SQLAlchemy's documented recipe),
        # so that BEGIN, SAVEPOINT and COMMIT are exactly what we emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    if begin is not None:
        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)

    return engine


class _Job:
    __slots__ = ("fn", "future", "loop")

    def __init__(self, fn: Unit[Any], future: asyncio.Future[Any] | None,
                 loop: asyncio.AbstractEventLoop | None) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SQLiteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, url: str, *, synchronous: str = "FULL") -> None:
        self._writer_engine = _sqlite_engine(
            url, begin="BEGIN IMMEDIATE", synchronous=synchronous, static=True
        )
        # The reader's transactions are opened by `read` itself (raw BEGIN/COMMIT).
        self._reader_engine = _sqlite_engine(
            url, begin=None, synchronous=synchronous, static=True
        )
        # The writer's one connection is opened here, before any reader or thread: its
        # first statement switches the file to WAL, which takes the file to itself. Opened
        # later, next to readers already at work, it could fail with "database is locked"
        # and leave no writer at all.
        self._writer_engine.connect().close()  # (StaticPool: the same connection, kept)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._reader: Connection | None = None
        self._thread = threading.Thread(target=self._run_writer, name="kassa-sqlite-writer",
                                        daemon=True)
        self._started = False
        self._lock = threading.Lock()
        self.batches = 0
        self.units = 0

    @property
    def engine(self) -> Engine:
        return self._writer_engine

    def _ensure_started(self) -> None:
        if not self._started:
            with self._lock:
                if not self._started:
                    self._thread.start()
                    self._started = True

    async def write(self, fn: Unit[T]) -> T:
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Job(fn, future, loop))
        return await future

    def write_sync(self, fn: Unit[T]) -> T:
        self._ensure_started()
        done = threading.Event()
        box: dict[str, Any] = {}
        self._queue.put(_SyncJob(fn, done, box))  # type: ignore[arg-type]
        while not done.wait(1.0):
            if not self._thread.is_alive():  # never wait forever on a writer that is gone
                raise RuntimeError("the SQLite writer thread has stopped")
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    async def read(self, fn: Unit[T]) -> T:
        # Point reads on SQLite take microseconds: run them inline on the loop.
        if self._reader is None:
            self._reader = self._reader_engine.connect()
        conn = self._reader
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("BEGIN")  # one snapshot for the whole unit
        try:
            return fn(conn)
        finally:
            raw.execute("COMMIT")
            if conn.in_transaction():  # SQLAlchemy autobegan: end its bookkeeping too
                conn.rollback()

    def _run_writer(self) -> None:
        conn = self._writer_engine.connect()
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch: list[Any] = [first]
            stop = False
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._run_batch(conn, batch)
            except Exception as exc:  # the writer outlives any one batch: every write waits
                log.exception("sqlite writer: a batch failed unexpectedly")
                # Whoever is still waiting hears of it (an answered job keeps its answer).
                self._finish([(job, None, exc) for job in batch
                              if not (isinstance(job, _SyncJob) and job.done.is_set())])
            if stop:
                break
        conn.close()

    def _run_batch(self, conn: Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Any, Any, BaseException | None]] = []
        try:
            conn.begin()
            if len(batch) == 1:
                job = batch[0]
                try:
                    outcomes.append((job, job.fn(conn), None))
                except BaseException as exc:
                    conn.rollback()
                    outcomes = [(job, None, exc)]
                    self._finish(outcomes)
                    return
            else:
                # Each unit in its own SAVEPOINT (raw: SQLAlchemy's costs ~20x more), so a
                # failing request rolls back alone and the rest commit together.
                raw = conn.connection.dbapi_connection
                assert raw is not None
                for job in batch:
                    raw.execute("SAVEPOINT unit")
                    try:
                        result = job.fn(conn)
                        raw.execute("RELEASE unit")
                        outcomes.append((job, result, None))
                    except BaseException as exc:
                        raw.execute("ROLLBACK TO unit")
                        raw.execute("RELEASE unit")
                        outcomes.append((job, None, exc))
            conn.commit()
        except BaseException as exc:  # the commit itself failed: nothing was written
            log.exception("sqlite batch commit failed")
            with contextlib.suppress(Exception):
                conn.rollback()
            outcomes = [(job, None, exc) for job in batch]
        self.batches += 1
        self.units += len(batch)
        self._finish(outcomes)

    @staticmethod
    def _finish(outcomes: list[tuple[Any, Any, BaseException | None]]) -> None:
        for job, result, error in outcomes:
            if isinstance(job, _SyncJob):
                if error is not None:
                    job.box["error"] = error
                else:
                    job.box["result"] = result
                job.done.set()
            elif job.loop is not None and job.future is not None:
                # A loop closed meanwhile has nobody waiting for the answer any more.
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_resolve, job.future, result, error)

    def close(self) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join(timeout=10)
        if self._reader is not None:
            self._reader.close()
        self._writer_engine.dispose()
        self._reader_engine.dispose()


class _SyncJob:
    __slots__ = ("box", "done", "fn")

    def __init__(self, fn: Unit[Any], done: threading.Event, box: dict[str, Any]) -> None:
        self.fn = fn
        self.done = done
        self.box = box


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 12) -> None:
        self._engine = create_engine(
            url,
            hide_parameters=True,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=False,
            pool_recycle=3600,
        )
        # Reads in autocommit: under READ COMMITTED every statement takes its own
        # snapshot even inside a transaction, so BEGIN/COMMIT around a read only cost
        # two round trips. Writes keep one transaction per unit.
        self._read_engine = create_engine(
            url,
            hide_parameters=True,
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=0,
            pool_recycle=3600,
        )
        self._executor = ThreadPoolExecutor(max_workers=pool_size,
                                            thread_name_prefix="kassa-pg")

    @property
    def engine(self) -> Engine:
        return self._engine

    def _write(self, fn: Unit[T]) -> T:
        with self._engine.begin() as conn:
            return fn(conn)

    def _read(self, fn: Unit[T]) -> T:
        with self._read_engine.connect() as conn:
            return fn(conn)

    async def write(self, fn: Unit[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write, fn)

    async def read(self, fn: Unit[T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._read, fn)

    def write_sync(self, fn: Unit[T]) -> T:
        return self._write(fn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._engine.dispose()
        self._read_engine.dispose()


def open_database(url: str, *, pool_size: int = 12, sqlite_synchronous: str = "FULL") -> Database:
    if url.startswith("sqlite"):
        return SQLiteDatabase(url, synchronous=sqlite_synchronous)
    return PostgresDatabase(url, pool_size=pool_size)
