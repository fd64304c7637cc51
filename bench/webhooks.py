"""Webhook delivery benchmark: deliveries per second and end-to-end latency.

    .venv/bin/python bench/webhooks.py [--db postgres|sqlite] [--workers 2] [--backlog 3000]
                                       [--rate 50] [--seconds 20]

Starts, on loopback: a fast receiver (its own process, asyncio, answers 200 at once and
logs the arrival time of every delivery), `kassa serve` with the in-process worker off
(API only), and `--workers` separate `kassa worker` processes. Then:

1. Throughput. With the workers stopped, `--backlog` payments are made from the balance
   (each records payment.created and payment.completed: 2 events, each to the order's
   callback_url), then the workers start; deliveries/s = deliveries / (time from the
   workers' start to the last arrival).
2. Latency. With the workers running, payments are made from the balance at `--rate` per
   second for `--seconds`; for every payment.completed, latency = arrival at the receiver
   - the moment the order completed (the event's created_at, taken in the transaction that
   completed it). p50 / p90 / p99 / max.

PostgreSQL: a fresh database on 127.0.0.1:5432, dropped afterwards. Results go to
stdout; bench/README.md records them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
from sqlalchemy import create_engine, func, select

from kassa.db.tables import events, webhook_attempts, webhook_deliveries

ROOT = Path(__file__).resolve().parent.parent
KASSA = str(ROOT / ".venv" / "bin" / "kassa")
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"

RECEIVER = r'''
import asyncio, signal, sys, time
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
log = open(sys.argv[2], "w", buffering=1)  # line-buffered: read while running
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length, event_id = 0, b""
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value.strip())
                elif name == b"x-event-id":
                    event_id = value.strip()
            if length:
                await reader.readexactly(length)
            log.write(f"{event_id.decode()} {time.time():.6f}\n")
            writer.write(REPLY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    log.close()
asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def database(kind: str, data_dir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{data_dir / 'kassa.sqlite3'}"
        return
    name = f"kassa_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        out = log.open("wb")
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


async def pay_many(base: str, headers: dict[str, str], count: int, callback: str,
                   *, rate: float | None, concurrency: int = 32) -> None:
    """`count` tasks dispatched and paid from the balance (one call each)."""
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        async def one(i: int) -> None:
            async with sem:
                r = await client.post("/api/v1/tasks", json={
                    "title": f"bench {i}", "amount": 1000, "currency": "CNY",
                    "payment_method": "balance", "callback_url": callback,
                    "return_url": "https://shop.example/paid"})
                if r.status_code != 201:
                    raise RuntimeError(r.text)
        if rate is None:
            await asyncio.gather(*(one(i) for i in range(count)))
            return
        start = time.monotonic()
        pending = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(i)))
        await asyncio.gather(*pending)


def arrivals(log: Path) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in log.read_text().splitlines():
        event_id, _, at = line.partition(" ")
        found.setdefault(event_id, float(at))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backlog", type=int, default=3000, help="payments (2 events each)")
    parser.add_argument("--rate", type=float, default=50.0, help="payments/s, latency phase")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    procs = Processes()
    with tempfile.TemporaryDirectory() as tmp_name, database(args.db, Path(tmp_name)) as url:
        tmp = Path(tmp_name)
        port, rx_port = free_port(), free_port()
        env = dict(os.environ)  # KASSA_* settings given to the bench reach every process
        env.update({"KASSA_DATABASE_URL": url, "KASSA_DATA_DIR": str(tmp),
                    "KASSA_SECRET_KEY": "bench-" + "0" * 32, "KASSA_PORT": str(port),
                    "KASSA_RATE_LIMIT": "1000000/second", "KASSA_MAX_AMOUNT_CENTS": "1000000000",
                    "KASSA_DAILY_LIMIT_CENTS": '{"enterprise": null}',
                    "KASSA_MIN_DEPOSIT_CENTS": "100"})
        receiver_log = tmp / "arrivals.log"
        procs.start([sys.executable, "-c", RECEIVER, str(rx_port), str(receiver_log)],
                               env, tmp / "receiver.out")
        callback = f"http://127.0.0.1:{rx_port}/webhooks/payment"
        try:
            created = subprocess.run(
                [KASSA, "accounts", "create", "--name", "Bench", "--tier", "enterprise",
                 "--json"], env=env, check=True, capture_output=True, text=True).stdout
            account = json.loads(created)
            test = next(k for k in account["keys"] if k["mode"] == "test")
            headers = {"Authorization": f"Bearer {test['api_key']}",
                       "X-API-Secret": test["api_secret"]}
            server = procs.start([KASSA, "serve"], {**env, "KASSA_RUN_WORKER": "false"},
                                 tmp / "serve.out")
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/healthz")
            engine = create_engine(url)
            # Fund the balance: one deposit, settled by a worker.
            total = (args.backlog + int(args.rate * args.seconds) + 10) * 1000
            r = httpx.post(base + "/api/v1/payment/deposit", headers=headers, timeout=30,
                           json={"amount": total, "currency": "CNY",
                                 "payment_method": "alipay",
                                 "return_url": "https://shop.example/paid"})
            if r.status_code != 201:
                raise RuntimeError(r.text)
            settle = procs.start([KASSA, "worker"], env, tmp / "settle.out")
            deadline = time.monotonic() + 60
            while httpx.get(base + "/api/v1/payment/balance", headers=headers
                            ).json()["balance_cents"] < total:
                if time.monotonic() > deadline:
                    raise RuntimeError("deposit did not settle")
                time.sleep(0.2)
            procs.stop(settle)

            # 1. Throughput from a backlog.
            asyncio.run(pay_many(base, headers, args.backlog, callback, rate=None))
            with engine.connect() as conn:  # the deposit has no callback_url: not counted
                expected = int(conn.execute(select(func.count()).select_from(events).where(
                    events.c.callback_url.is_not(None))).scalar() or 0)
            workers = [procs.start([KASSA, "worker"], env, tmp / f"worker{i}.out")
                       for i in range(args.workers)]
            started = time.time()
            deadline = time.monotonic() + 600
            while len(arrivals(receiver_log)) < expected:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(arrivals(receiver_log))} of {expected}")
                time.sleep(0.05)
            got = arrivals(receiver_log)
            first, last = min(got.values()), max(got.values())
            backlog_deliveries = expected
            rate = backlog_deliveries / (last - started)
            steady = (backlog_deliveries - 1) / (last - first)
            with engine.connect() as conn:
                attempts_per = conn.execute(
                    select(func.avg(webhook_deliveries.c.attempts))).scalar()
                http_ms = conn.execute(select(func.avg(webhook_attempts.c.latency_ms),
                                              func.max(webhook_attempts.c.latency_ms))).one()
            print(f"throughput: {backlog_deliveries} deliveries by {args.workers} workers: "
                  f"{steady:,.0f} deliveries/s from the first arrival to the last "
                  f"({last - first:.2f} s); {rate:,.0f}/s counting the workers' start-up "
                  f"({last - started:.2f} s); attempts per delivery {float(attempts_per):.3f}; "
                  f"HTTP request mean {float(http_ms[0]):.1f} ms, max {http_ms[1]} ms")

            # 2. End-to-end latency at a steady rate.
            before = set(got)
            count = int(args.rate * args.seconds)
            asyncio.run(pay_many(base, headers, count, callback, rate=args.rate))
            time.sleep(3)
            got = arrivals(receiver_log)
            with engine.connect() as conn:
                rows = conn.execute(select(events.c.event_id, events.c.created_at).where(
                    events.c.event_type == "payment.completed",
                    events.c.callback_url.is_not(None))).all()
            latencies = []
            for event_id, created_at in rows:
                if event_id in before or event_id not in got:
                    continue
                completed: datetime = created_at
                latencies.append((got[event_id] - completed.timestamp()) * 1000)
            missing = sum(1 for e, _ in rows if e not in got)
            print(f"latency (order completed -> receiver), {len(latencies)} payments at "
                  f"{args.rate:g}/s: p50 {percentile(latencies, 50):.1f} ms, "
                  f"p90 {percentile(latencies, 90):.1f} ms, p99 {percentile(latencies, 99):.1f} "
                  f"ms, max {max(latencies):.1f} ms, mean {statistics.mean(latencies):.1f} ms; "
                  f"undelivered {missing}")
            for w in workers:
                procs.stop(w)
            procs.stop(server)
            engine.dispose()
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
