"""Benchmark fixtures, made through the real API before wrk runs (not measured).

    prepare.py tasks  --url URL --count N --out FILE   N undispatched tasks, ids one a line
    prepare.py orders --url URL --count N --out FILE   N tasks with their payment orders
                                                       (dispatch true), order ids one a line
    prepare.py paid --url URL --count N --amount A --out FILE
                                                       N tasks with their payment orders of A
                                                       cents each, waited for until the sandbox
                                                       has completed every one (paid, the whole
                                                       amount in escrow), order ids one a line
    prepare.py payments --url URL --orders FILE --out FILE
                                                       a seed-004 Payment (POST /api/v1/payments)
                                                       for every order id in FILE (as made by
                                                       `orders`), their integer ids one a line
    prepare.py history --url URL --count N --out FILE  a history of exactly N transactions for
                                                       a merchant that has none yet (60 %
                                                       payments, 10 % deposits, 30 % 1-cent
                                                       refunds, refunds newest); FILE gets the
                                                       next_cursor of every page of 20, one a
                                                       line, as a client walking it sends them
    prepare.py epay --count N --out FILE               N signed EasyPay /mapi.php form bodies
                                                       (each its own out_trade_no), one a line;
                                                       BENCH_EPAY_PID / BENCH_EPAY_KEY
    prepare.py cryptogw --count N --out FILE           N signed crypto-gateway /v1/payment
                                                       requests, "timestamp TAB nonce TAB
                                                       signature TAB body" a line (good for the
                                                       5 minutes their timestamps are accepted);
                                                       BENCH_CRYPTO_KEY / BENCH_CRYPTO_SECRET
    prepare.py wait-idle [--timeout S]                 wait until the worker has run every job
                                                       due within the next minute (reads the
                                                       database named by KASSA_* settings)

Credentials come from BENCH_API_KEY / BENCH_API_SECRET; the webhook sink from
BENCH_CALLBACK_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import create_engine, func, select

from kassa.config import Settings
from kassa.db.tables import jobs

RETURN_URL = "https://your-app.com/payment/success"
CALLBACK_URL = os.environ.get("BENCH_CALLBACK_URL", "http://127.0.0.1:9/webhooks/payment")


def _headers() -> dict[str, str]:
    return {
        "Authorization": f"Bearer {os.environ['BENCH_API_KEY']}",
        "X-API-Secret": os.environ["BENCH_API_SECRET"],
        "Content-Type": "application/json",
    }


def _task_body(i: int, *, dispatch: bool, amount: int = 5000) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": f"bench task {i}",
        "amount": amount,
        "currency": "CNY",
        "return_url": RETURN_URL,
        "callback_url": CALLBACK_URL,
        "dispatch": dispatch,
    }
    if dispatch:
        body["payment_method"] = "alipay"
    return body


def _deposit_body(i: int) -> dict[str, Any]:
    return {"amount": 10000, "currency": "CNY", "payment_method": "alipay",
            "return_url": RETURN_URL, "callback_url": CALLBACK_URL}


def _refund_body(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "amount": 1, "reason": "quality_issue",
            "refund_method": "original"}


def _payment_body(order_id: str) -> dict[str, Any]:
    return {"orderId": order_id, "subject": "bench payment"}


async def _post_many(url: str, path: str, bodies: Sequence[dict[str, Any]], *,
                     expected: int, pick: Callable[[dict[str, Any]], str],
                     concurrency: int) -> list[str]:
    """POST every body to `path` with `concurrency` requests in flight; `pick` takes the id
    to keep from each answer (in the order of `bodies`)."""
    count = len(bodies)
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
                    resp = await client.post(path, json=bodies[i])
                    if resp.status_code == expected:
                        break
                    if resp.status_code < 500 and resp.status_code != 429:
                        sys.exit(f"POST {path}: {resp.status_code} {resp.text}")
                    await asyncio.sleep(0.1 * (attempt + 1))
                else:
                    sys.exit(f"POST {path} kept failing: {resp.status_code} {resp.text}")
                results[i] = pick(resp.json())

    await asyncio.gather(*(worker() for _ in range(min(concurrency, max(count, 1)))))
    ids = [r for r in results if r is not None]
    assert len(ids) == count, f"every POST {path} succeeded"
    return ids


async def _create(url: str, count: int, *, dispatch: bool, concurrency: int,
                  amount: int = 5000) -> list[str]:
    """POST /api/v1/tasks `count` times: order ids (dispatch) or task ids."""
    bodies = [_task_body(i, dispatch=dispatch, amount=amount) for i in range(count)]
    return await _post_many(
        url, "/api/v1/tasks", bodies, expected=201, concurrency=concurrency,
        pick=(lambda d: d["payment"]["order_id"]) if dispatch else (lambda d: d["task"]["task_id"]))


async def _not_completed(url: str, order_ids: Sequence[str], *, concurrency: int
                         ) -> list[str]:
    """The orders still pending; exits if one failed, or a paid one does not hold its whole
    amount in escrow."""
    queue = list(order_ids)
    pending: list[str] = []

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=url, headers=_headers(), timeout=60.0) as client:
            while queue:
                order_id = queue.pop()
                resp = await client.get("/api/v1/payment/query", params={"order_id": order_id})
                if resp.status_code != 200:
                    sys.exit(f"GET /api/v1/payment/query: {resp.status_code} {resp.text}")
                order = resp.json()
                if order["status"] == "pending":
                    pending.append(order_id)
                elif order["status"] != "completed":
                    sys.exit(f"order {order_id} is {order['status']}, not completed")
                elif (order["type"] == "payment"
                      and order["escrow"]["held_cents"] != order["amount_cny"]):
                    sys.exit(f"order {order_id} holds {order['escrow']} in escrow, "
                             f"not its whole amount")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return pending


async def _wait_completed(url: str, order_ids: Sequence[str], *, concurrency: int,
                          timeout: float) -> None:
    """Poll GET /api/v1/payment/query until the sandbox has completed every order."""
    waiting = list(order_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        if time.monotonic() > deadline:
            sys.exit(f"{len(waiting)} orders not completed after {timeout:.0f}s, "
                     f"e.g. {waiting[0]}")
        await asyncio.sleep(1.0)
        waiting = await _not_completed(url, waiting, concurrency=concurrency)


def _make(args: argparse.Namespace, *, dispatch: bool) -> None:
    started = time.perf_counter()
    ids = asyncio.run(_create(args.url, args.count, dispatch=dispatch,
                              concurrency=args.concurrency))
    Path(args.out).write_text("".join(f"{x}\n" for x in ids))
    elapsed = time.perf_counter() - started
    what = "orders" if dispatch else "undispatched tasks"
    print(f"prepare: {len(ids)} {what} in {elapsed:.1f}s ({len(ids) / elapsed:.0f}/s) "
          f"-> {args.out}", flush=True)


def _paid(args: argparse.Namespace) -> None:
    started = time.perf_counter()

    async def make() -> list[str]:
        ids = await _create(args.url, args.count, dispatch=True, concurrency=args.concurrency,
                            amount=args.amount)
        await _wait_completed(args.url, ids, concurrency=args.concurrency,
                              timeout=args.timeout)
        return ids

    ids = asyncio.run(make())
    Path(args.out).write_text("".join(f"{x}\n" for x in ids))
    print(f"prepare: {len(ids)} paid orders of {args.amount} cents, all in escrow, "
          f"in {time.perf_counter() - started:.1f}s -> {args.out}", flush=True)


def _payments(args: argparse.Namespace) -> None:
    """One Payment per order (each order is new to it, so every answer is a 201)."""
    started = time.perf_counter()
    order_ids = [line for line in Path(args.orders).read_text().split() if line]
    if not order_ids:
        sys.exit(f"no order ids in {args.orders}")
    ids = asyncio.run(_post_many(
        args.url, "/api/v1/payments", [_payment_body(o) for o in order_ids], expected=201,
        pick=lambda d: str(int(d["data"]["id"])), concurrency=args.concurrency))
    Path(args.out).write_text("".join(f"{x}\n" for x in ids))
    elapsed = time.perf_counter() - started
    print(f"prepare: {len(ids)} Payments (seed 004) in {elapsed:.1f}s "
          f"({len(ids) / elapsed:.0f}/s) -> {args.out}", flush=True)


async def _walk(url: str, limit: int) -> tuple[int, list[str]]:
    """Page through the whole history: (rows seen, the next_cursor of every page)."""
    rows, cursors = 0, []
    seen: set[str] = set()
    params: dict[str, Any] = {"limit": limit}
    async with httpx.AsyncClient(base_url=url, headers=_headers(), timeout=60.0) as client:
        while True:
            resp = await client.get("/api/v1/payment/transactions", params=params)
            if resp.status_code != 200:
                sys.exit(f"GET /api/v1/payment/transactions: {resp.status_code} {resp.text}")
            page = resp.json()
            for row in page["data"]:
                if row["transaction_id"] in seen:
                    sys.exit(f"history paging repeated {row['transaction_id']}")
                seen.add(row["transaction_id"])
            rows += len(page["data"])
            if not page["has_more"]:
                return rows, cursors
            cursors.append(page["next_cursor"])
            params["starting_after"] = page["next_cursor"]


def _history(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    payments = args.count * 6 // 10
    deposits = args.count // 10
    refunds = args.count - payments - deposits

    async def make() -> tuple[int, list[str]]:
        before, _ = await _walk(args.url, 100)
        if before:
            sys.exit(f"the merchant already has {before} transactions: use a new account")
        orders, deposit_ids = await asyncio.gather(
            _create(args.url, payments, dispatch=True, concurrency=args.concurrency // 2),
            _post_many(args.url, "/api/v1/payment/deposit",
                       [_deposit_body(i) for i in range(deposits)], expected=201,
                       pick=lambda d: d["order_id"], concurrency=args.concurrency // 2))
        await _wait_completed(args.url, orders[:refunds] + deposit_ids,
                              concurrency=args.concurrency, timeout=args.timeout)
        await _post_many(args.url, "/api/v1/payment/refund",
                         [_refund_body(o) for o in orders[:refunds]], expected=200,
                         pick=lambda d: d["refund_id"], concurrency=args.concurrency)
        return await _walk(args.url, 20)

    rows, cursors = asyncio.run(make())
    if rows != args.count:
        sys.exit(f"the history has {rows} transactions, expected {args.count}")
    Path(args.out).write_text("".join(f"{c}\n" for c in cursors))
    print(f"prepare: a history of {rows} transactions ({payments} payments, {deposits} "
          f"deposits, {refunds} refunds) in {time.perf_counter() - started:.1f}s; "
          f"{len(cursors)} page cursors -> {args.out}", flush=True)


def _epay(args: argparse.Namespace) -> None:
    """Signed as seed 003 says (the bench's own signer): sorted, no empty values, + KEY."""
    pid, key = os.environ["BENCH_EPAY_PID"], os.environ["BENCH_EPAY_KEY"]
    run = secrets.token_hex(4)
    with open(args.out, "w") as out:
        for i in range(args.count):
            params = {"pid": pid, "type": "alipay", "out_trade_no": f"b{run}{i}",
                      "notify_url": CALLBACK_URL, "name": "bench order", "money": "50.00",
                      "clientip": "127.0.0.1"}
            signing = "&".join(f"{k}={params[k]}" for k in sorted(params))
            params["sign"] = hashlib.md5((signing + key).encode()).hexdigest()
            params["sign_type"] = "MD5"
            out.write(urlencode(params) + "\n")
    print(f"epay: {args.count} signed mapi.php bodies -> {args.out}", flush=True)


def _cryptogw(args: argparse.Namespace) -> None:
    key, secret = os.environ["BENCH_CRYPTO_KEY"], os.environ["BENCH_CRYPTO_SECRET"]
    run = secrets.token_hex(4)
    timestamp = str(int(time.time()))
    with open(args.out, "w") as out:
        for i in range(args.count):
            body = (f'{{"order_no":"b{run}{i}","currency":"USDT","amount":"10.00",'
                    f'"chain_type":"bsc","notify_url":"{CALLBACK_URL}"}}')
            nonce = secrets.token_hex(8)
            signature = hmac.new(secret.encode(), f"{timestamp}\n{nonce}\n{body}".encode(),
                                 hashlib.sha256).hexdigest()
            out.write(f"{timestamp}\t{nonce}\t{signature}\t{body}\n")
    print(f"cryptogw: {args.count} signed /v1/payment requests for key {key[:12]}... -> "
          f"{args.out}", flush=True)


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
    for name in ("tasks", "orders", "paid", "history"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--concurrency", type=int, default=32)
        if name == "paid":
            p.add_argument("--amount", type=int, required=True, help="cents per order")
        if name in ("paid", "history"):
            p.add_argument("--timeout", type=float, default=120.0,
                           help="seconds to wait for the sandbox to complete the orders")
    p = sub.add_parser("payments")
    p.add_argument("--url", required=True)
    p.add_argument("--orders", required=True, help="order ids, one a line (prepare.py orders)")
    p.add_argument("--out", required=True)
    p.add_argument("--concurrency", type=int, default=32)
    for name in ("epay", "cryptogw"):
        p = sub.add_parser(name)
        p.add_argument("--count", type=int, required=True)
        p.add_argument("--out", required=True)
    w = sub.add_parser("wait-idle")
    w.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    if args.command == "wait-idle":
        _wait_idle(args)
    elif args.command == "paid":
        _paid(args)
    elif args.command == "history":
        _history(args)
    elif args.command == "payments":
        _payments(args)
    elif args.command == "epay":
        _epay(args)
    elif args.command == "cryptogw":
        _cryptogw(args)
    else:
        _make(args, dispatch=args.command == "orders")


if __name__ == "__main__":
    main()
