"""All SQL about jobs. Claims are leases: FOR UPDATE SKIP LOCKED on PostgreSQL.

A job is claimed (locked_by, lease_token, locked_until) in one short
transaction; it is run in another that first deletes the job row *only if the
lease is still ours*, so its effects commit at most once even if a lease ran
out and another worker took the job over. A worker killed mid-job leaves the
row in place; when the lease runs out, another worker claims it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, delete, func, insert, or_, select, update

from kassa.db.prepared import Prepared
from kassa.db.tables import job_runs, jobs

_insert = Prepared(insert(jobs), columns=["kind", "ref", "run_at", "created_at"])
_take = Prepared(delete(jobs).where(jobs.c.job_id == bindparam("k_job"),
                                    jobs.c.lease_token == bindparam("k_token")))
_record_run = Prepared(insert(job_runs))


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job_id: int
    kind: str
    ref: str
    attempts: int
    lease_token: str


def enqueue(conn: Connection, *, kind: str, ref: str, run_at: datetime, now: datetime) -> None:
    _insert.run(conn, {"kind": kind, "ref": ref, "run_at": run_at, "created_at": now})


def enqueue_many(conn: Connection, rows: list[tuple[str, str, datetime]], now: datetime) -> None:
    _insert.run_many(conn, [
        {"kind": kind, "ref": ref, "run_at": run_at, "created_at": now}
        for kind, ref, run_at in rows
    ])


def claim(conn: Connection, *, worker: str, now: datetime, limit: int,
          lease_seconds: float) -> list[ClaimedJob]:
    token = secrets.token_hex(8)
    due = (
        select(jobs.c.job_id)
        .where(
            jobs.c.dead == 0,
            jobs.c.run_at <= now,
            or_(jobs.c.locked_until.is_(None), jobs.c.locked_until < now),
        )
        .order_by(jobs.c.run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(jobs)
        .where(jobs.c.job_id.in_(due.scalar_subquery()))
        .values(locked_by=worker, lease_token=token,
                locked_until=now + timedelta(seconds=lease_seconds),
                attempts=jobs.c.attempts + 1)
        .returning(jobs.c.job_id, jobs.c.kind, jobs.c.ref, jobs.c.attempts)
    )
    return [ClaimedJob(job_id=r.job_id, kind=r.kind, ref=r.ref, attempts=r.attempts,
                       lease_token=token) for r in conn.execute(stmt)]


def take(conn: Connection, job: ClaimedJob) -> bool:
    """Delete the job if our lease still holds: the run's effects then commit with it."""
    return _take.run(conn, {"k_job": job.job_id, "k_token": job.lease_token}) == 1


def record_run(conn: Connection, job: ClaimedJob, *, worker: str, outcome: str,
               now: datetime) -> None:
    _record_run.run(conn, {"job_id": job.job_id, "kind": job.kind, "ref": job.ref,
                           "worker": worker, "outcome": outcome[:40], "finished_at": now})


def release_failed(conn: Connection, job: ClaimedJob, *, error: str, retry_at: datetime,
                   dead: bool) -> None:
    conn.execute(
        update(jobs)
        .where(jobs.c.job_id == job.job_id, jobs.c.lease_token == job.lease_token)
        .values(locked_by=None, lease_token=None, locked_until=None, run_at=retry_at,
                last_error=error[:2000], dead=1 if dead else 0)
    )


def pending_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(jobs).where(jobs.c.dead == 0)
                            ).scalar() or 0)
