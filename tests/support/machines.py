"""What the hypothesis state machines over the service layer share: an empty database per
example, a clock that moves only when told, and running a machine on one database."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test
from sqlalchemy import Connection

from kassa.context import ServiceContext, build_context
from kassa.core.clock import Clock
from kassa.db import tables
from kassa.db.database import Database, open_database
from kassa.db.migrate import upgrade
from tests.support.harness import make_settings


class ManualClock(Clock):
    """Moves only when told, so a replayed example sees the same times and limit days."""

    def __init__(self, start: datetime) -> None:
        super().__init__()
        self.start = start

    def now(self) -> datetime:
        return self.start + self.offset


def wipe(conn: Connection) -> None:
    for table in reversed(tables.metadata.sorted_tables):
        conn.execute(table.delete())


class ServiceMachine(RuleBasedStateMachine):
    """Every example starts from an empty database, so that a replayed (shrunk) example
    sees exactly what it saw the first time, and the model accounts for every row."""

    db: Database
    ctx: ServiceContext
    start: ClassVar[datetime]

    def __init__(self) -> None:
        super().__init__()
        self.db.write_sync(wipe)
        self.ctx.clock = ManualClock(self.start)

    def now(self) -> datetime:
        return self.ctx.clock.now()


def run_machine(machine: type[ServiceMachine], database_url: str, data_dir: Path,
                run_settings: settings, **overrides: Any) -> None:
    """Run `machine` on a migrated database at `database_url` (settings `overrides`)."""
    upgrade(database_url)
    ctx = build_context(make_settings(data_dir, database_url, **overrides))
    db = open_database(database_url, pool_size=2, sqlite_synchronous="NORMAL")
    try:
        bound = type(f"{machine.__name__}On{db.dialect.title()}", (machine,),
                     {"db": db, "ctx": ctx})
        run_state_machine_as_test(bound, settings=run_settings)
    finally:
        db.close()
