"""Benchmark fixtures, made through the real API before wrk runs (not measured).

    prepare.py tasks  --url URL --count N --out FILE   N undispatched tasks, ids one a line
    prepare.py orders --url URL --count N --out FILE   N tasks with their payment orders
                                                       (dispatch true), order ids one a line
    prepare.py wait-idle [--timeout S]                 wait until the worker has run every job
                                                       due within the next minute (reads the
                                                       database named by KASSA_* settings)

Credentials come from BENCH_API_KEY / BENCH_API_SECRET; the webhook sink from
BENCH_CALLBACK_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select

from kassa.config import Settings
from kassa.db.tables import jobs

RETURN_URL = "https://your-app.com/payment/success"


def _headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {os.environ['BENCH_API_KEY']}",
        "X-API-Secret": os.environ["BENCH_API_SECRET"],
        "Content-Type": "application/json",
    }


def _task_body(i: int, *, dispatch: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": f"bench task {i}",
        "amount": 5000,
        "currency": "CNY",
        "return_url": RETURN_URL,
        "callback_url": os.environ.get("BENCH_CALLBACK_URL",
                                       "http://127.0.0.1:9/webhooks/payment"),
        "dispatch": dispatch,
    }
    if dispatch:
        body["payment_method"] = "alipay"
    return body


async def _create(url: str, count: int, *, dispatch: bool, concurrency: int) -> list[str]:
    """POST /api/v1/tasks `count` times with `concurrency` requests in flight."""
    results: list[str | None] = [None] * count
    next_index = 0

    async def worker() -> None:
        # One client (one connection) per worker: httpx's pool gets slow when shared
        # by many concurrent requests, and the client must not be the bottleneck.
        nonlocal next_index
        async with httpx.AsyncClient(base_url=url, headers=_headers(), timeout=60.0) as client:
            while next_index < count:
                i = next_index
                next_index += 1
                for attempt in range(5):
                    resp = await client.post("/api/v1/tasks",
                                             json=_task_body(i, dispatch=dispatch))
                    if resp.status_code == 201:
                        break
                    if resp.status_code < 500 and resp.status_code != 429:
                        sys.exit(f"POST /api/v1/tasks: {resp.status_code} {resp.text}")
                    await asyncio.sleep(0.1 * (attempt + 1))
                else:
                    sys.exit(f"POST /api/v1/tasks kept failing: {resp.status_code} {resp.text}")
                data = resp.json()
                results[i] = data["payment"]["order_id"] if dispatch else data["task"]["task_id"]

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    ids = [r for r in results if r is not None]
    assert len(ids) == count, "every task was created"
    return ids


def _make(args: argparse.Namespace, *, dispatch: bool) -> None:
    started = time.perf_counter()
    ids = asyncio.run(_create(args.url, args.count, dispatch=dispatch,
                              concurrency=args.concurrency))
    Path(args.out).write_text("".join(f"{x}\n" for x in ids))
    elapsed = time.perf_counter() - started
    what = "orders" if dispatch else "undispatched tasks"
    print(f"prepare: {len(ids)} {what} in {elapsed:.1f}s ({len(ids) / elapsed:.0f}/s) "
          f"-> {args.out}", flush=True)


def _wait_idle(args: argparse.Namespace) -> None:
    engine = create_engine(Settings().resolved_database_url)
    deadline = time.monotonic() + args.timeout
    started = time.monotonic()
    pending = -1
    try:
        while True:
            horizon = datetime.now(UTC) + timedelta(seconds=60)
            with engine.connect() as conn:
                pending = conn.execute(select(func.count()).select_from(jobs).where(
                    jobs.c.dead == 0, jobs.c.run_at <= horizon)).scalar_one()
            if pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(1.0)
    finally:
        engine.dispose()
    waited = time.monotonic() - started
    if pending:
        print(f"wait-idle: gave up after {waited:.0f}s, {pending} jobs still due", flush=True)
    else:
        print(f"wait-idle: worker idle after {waited:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("tasks", "orders"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--concurrency", type=int, default=32)
    w = sub.add_parser("wait-idle")
    w.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.command == "wait-idle":
        _wait_idle(args)
    else:
        _make(args, dispatch=args.command == "orders")


if __name__ == "__main__":
    main()
