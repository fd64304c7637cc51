"""kassa serve | worker | migrate | accounts | demo."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import orjson
from sqlalchemy import Connection

from kassa.accounts import service as accounts
from kassa.accounts.schemas import NewAccount, ProtocolCredential, Tier
from kassa.config import Settings
from kassa.context import ServiceContext, build_context
from kassa.db.database import open_database
from kassa.db.migrate import upgrade

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    """From the environment (KASSA_…), and from KASSA_CONFIG_FILE (KASSA_… = value lines,
    e.g. the upstreams' credentials) where set; the environment wins."""
    return Settings(_env_file=os.environ.get("KASSA_CONFIG_FILE") or None, **overrides)


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request's full URL at INFO, and EasyPay's order query carries the
    # KEY in its URL (seed 003): Kassa logs its upstream calls itself, without URLs.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _print_account(account: NewAccount, as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(dataclasses.asdict(account), option=orjson.OPT_INDENT_2))
        return
    click.echo(f"Account {account.account_id} ({account.name}, {account.tier})")
    for pair in account.keys:
        click.echo(f"  {pair.mode} key:    {pair.api_key}")
        click.echo(f"  {pair.mode} secret: {pair.api_secret}")
    click.echo(f"  webhook secret: {account.webhook_secret}")
    _print_protocol_credentials(account.protocol_credentials)
    click.echo("Keys and secrets are shown once; Kassa stores only their keyed hashes.")


_PROTOCOL_LABELS = {"epay": ("EasyPay PID", "EasyPay KEY"),
                    "cryptogw": ("crypto API key", "crypto secret")}


def _print_protocol_credentials(credentials: tuple[ProtocolCredential, ...]) -> None:
    for c in credentials:
        id_label, secret_label = _PROTOCOL_LABELS[c.protocol]
        click.echo(f"  {c.mode} {id_label}: {c.id}")
        click.echo(f"  {c.mode} {secret_label}: {c.secret}")


@click.group(help="Kassa: a self-hosted payment gateway for task marketplaces.")
def main() -> None:
    pass


@main.command(help="Apply database migrations (SQLite by default; KASSA_DATABASE_URL for "
                   "PostgreSQL).")
def migrate() -> None:
    settings = _settings()
    upgrade(settings.resolved_database_url)
    click.echo("database is up to date")


def _ensure_demo(settings: Settings, ctx: ServiceContext) -> None:
    db = open_database(settings.resolved_database_url, pool_size=2,
                       sqlite_synchronous=settings.sqlite_synchronous)
    try:
        created = db.write_sync(lambda conn: accounts.ensure_demo_account(conn, ctx))
        account_id, webhook_secret = db.write_sync(
            lambda conn: accounts.demo_account_credentials(conn, ctx))  # type: ignore[misc]
        crypto_secret = db.write_sync(lambda conn: accounts.resolve_protocol_credential(
            conn, ctx, protocol="cryptogw", public_id=accounts.DEMO_CRYPTOGW_KEY))
    finally:
        db.close()
    if created is not None:
        click.echo("Created the demo account.")
        live = created.keys[0]
        click.echo(f"  live key:    {live.api_key}   (shown once)")
        click.echo(f"  live secret: {live.api_secret}   (shown once)")
    click.echo(f"Demo account {account_id} (test mode, sandbox channel):")
    click.echo(f"  test key:       {accounts.DEMO_TEST_KEY}")
    click.echo(f"  test secret:    {accounts.DEMO_TEST_SECRET}")
    click.echo(f"  webhook secret: {webhook_secret}")
    click.echo(f"  EasyPay PID / KEY (seed 003's test merchant): {accounts.DEMO_EPAY_PID} / "
               f"{accounts.DEMO_EPAY_KEY}")
    if crypto_secret is not None:
        click.echo(f"  crypto-gateway API key / secret: {accounts.DEMO_CRYPTOGW_KEY} / "
                   f"{crypto_secret[1]}")


@main.command(help="Run the API, the worker and the pages in one process.")
@click.option("--host", default=None, help="Bind address (KASSA_HOST, default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="Port (KASSA_PORT, default 8000)")
@click.option("--demo/--no-demo", default=False,
              help="Create the demo account if missing and print its credentials")
@click.option("--no-worker", is_flag=True, help="Serve the API only (run `kassa worker` apart)")
@click.option("--no-migrate", is_flag=True, help="Do not apply migrations at start-up")
@click.option("--log-level", default="info")
def serve(host: str | None, port: int | None, demo: bool, no_worker: bool, no_migrate: bool,
          log_level: str) -> None:
    import uvicorn

    from kassa.app import create_app

    _setup_logging(log_level)
    overrides: dict[str, object] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = _settings(**overrides)
    if not no_migrate:
        upgrade(settings.resolved_database_url)
    ctx = build_context(settings)
    if demo:
        _ensure_demo(settings, ctx)
    app = create_app(settings, ctx=ctx, run_worker=not no_worker and settings.run_worker)
    click.echo(f"Kassa listening on http://{settings.host}:{settings.port} "
               f"(docs at /docs, merchant console at /console, database "
               f"{settings.resolved_database_url.split('://')[0]})")
    uvicorn.run(app, host=settings.host, port=settings.port, loop="uvloop", http="httptools",
                access_log=False, log_level=log_level, lifespan="on")


@main.command(help="Run durable jobs only (any number of workers may share one PostgreSQL).")
@click.option("--log-level", default="info")
def worker(log_level: str) -> None:
    from kassa.worker.runner import Worker

    _setup_logging(log_level)
    settings = _settings()
    ctx = build_context(settings)
    db = open_database(settings.resolved_database_url, pool_size=4,
                       sqlite_synchronous=settings.sqlite_synchronous)

    async def run() -> None:
        w = Worker(db, ctx)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, w.stop)
        await w.run_forever()

    try:
        asyncio.run(run())
    finally:
        db.close()


@main.group(help="Create and list merchant accounts.")
def accounts_cmd() -> None:
    pass


main.add_command(accounts_cmd, name="accounts")


@accounts_cmd.command("create", help="Create an account; prints its keys and secrets once.")
@click.option("--name", required=True)
@click.option("--tier", type=click.Choice([t.value for t in Tier]), default=Tier.STANDARD.value)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output")
def accounts_create(name: str, tier: str, as_json: bool) -> None:
    settings = _settings()
    upgrade(settings.resolved_database_url)
    ctx = build_context(settings)
    db = open_database(settings.resolved_database_url, pool_size=2)
    try:
        account = db.write_sync(lambda conn: accounts.create_account(conn, ctx, name=name,
                                                                     tier=tier))
    finally:
        db.close()
    _print_account(account, as_json)


@accounts_cmd.command("protocol-keys",
                      help="Issue an account's EasyPay and crypto-gateway credentials where it "
                           "has none; with --rotate, new KEYs and secrets for all of them.")
@click.argument("account_id")
@click.option("--rotate", is_flag=True, help="Replace every KEY and secret (PIDs and API "
                                             "keys stay)")
def accounts_protocol_keys(account_id: str, rotate: bool) -> None:
    from kassa.accounts import repository

    settings = _settings()
    upgrade(settings.resolved_database_url)
    ctx = build_context(settings)
    db = open_database(settings.resolved_database_url, pool_size=2)

    def unit(conn: Connection) -> tuple[ProtocolCredential, ...] | None:
        if repository.get_account(conn, account_id) is None:
            return None
        if rotate:
            return accounts.rotate_protocol_secrets(conn, ctx, account_id=account_id)
        return accounts.issue_protocol_credentials(conn, ctx, account_id=account_id)
    try:
        issued = db.write_sync(unit)
    finally:
        db.close()
    if issued is None:
        raise click.ClickException(f"no account {account_id}")
    if not issued:
        click.echo("The account has its credentials already (--rotate to replace the KEYs).")
    _print_protocol_credentials(issued)


@accounts_cmd.command("list", help="List accounts.")
def accounts_list() -> None:
    from kassa.accounts import repository

    settings = _settings()
    db = open_database(settings.resolved_database_url, pool_size=2)
    try:
        rows = db.write_sync(repository.list_accounts)
    finally:
        db.close()
    for row in rows:
        click.echo(f"{row.account_id}\t{row.tier}\t{row.name}")


@main.group("channels", help="Live upstream channels (SPEC §8).")
def channels_cmd() -> None:
    pass


@channels_cmd.command("check", help="Check that each configured upstream is reachable and "
                                    "accepts Kassa's credentials.")
def channels_check() -> None:
    from kassa.channels.base import UpstreamError

    ctx = build_context(_settings())
    upstreams = ctx.channels.upstreams()
    if not upstreams:
        click.echo("No live upstream is configured (KASSA_EPAY_UPSTREAM_URL, _PID, _KEY; "
                   "KASSA_CRYPTOGW_UPSTREAM_URL, _API_KEY, _SECRET): live alipay, wechat "
                   "and usdt orders are refused.")
        return

    async def check_all() -> list[tuple[str, str | None]]:
        results: list[tuple[str, str | None]] = []
        for upstream in upstreams:
            try:
                results.append((await upstream.check(), None))
            except UpstreamError as exc:
                results.append((upstream.name, str(exc)))
        return results

    failed = False
    for line, error in asyncio.run(check_all()):
        if error is None:
            click.echo(f"ok    {line}")
        else:
            failed = True
            click.echo(f"FAIL  {line}: {error}")
    if failed:
        raise SystemExit(1)


@main.group("orders", help="Operators' work on orders: bank transfers and payment reviews.")
def orders_cmd() -> None:
    pass


def _operator_write(unit: Callable[[Connection, ServiceContext], T]) -> T:
    from kassa.errors import KassaError

    settings = _settings()
    upgrade(settings.resolved_database_url)
    ctx = build_context(settings)
    db = open_database(settings.resolved_database_url, pool_size=2)
    try:
        return db.write_sync(lambda conn: unit(conn, ctx))
    except KassaError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        db.close()


@orders_cmd.command("confirm-transfer",
                    help="A live bank transfer arrived: complete its order (processing).")
@click.argument("order_id")
@click.option("--amount", type=int, default=None,
              help="Cents received; refused unless it is the order's amount")
def orders_confirm_transfer(order_id: str, amount: int | None) -> None:
    from kassa.upstreams import service as upstreams

    order = _operator_write(lambda conn, ctx: upstreams.confirm_transfer(
        conn, ctx, order_id=order_id, amount=amount))
    click.echo(f"{order['order_id']} completed: {order['amount']} {order['currency']}")


@orders_cmd.command("fail-transfer",
                    help="A live bank transfer never arrived: its order fails (processing).")
@click.argument("order_id")
@click.option("--note", default=None, help="Why (the order's failure message)")
def orders_fail_transfer(order_id: str, note: str | None) -> None:
    from kassa.upstreams import service as upstreams

    order = _operator_write(lambda conn, ctx: upstreams.fail_transfer(
        conn, ctx, order_id=order_id, note=note))
    click.echo(f"{order['order_id']} failed: {order['failure_message']}")


@orders_cmd.command("reviews", help="Payments waiting for an operator: money reported for an "
                                    "expired order, or for another amount.")
@click.option("--all", "show_all", is_flag=True, help="Resolved ones too")
def orders_reviews(show_all: bool) -> None:
    from kassa.upstreams import repository as upstreams

    rows = _operator_write(lambda conn, ctx: upstreams.list_reviews(
        conn, status=None if show_all else "open"))
    if not rows:
        click.echo("No payment reviews." if show_all else "No open payment reviews.")
    for r in rows:
        amount = "-" if r["reported_amount"] is None else str(r["reported_amount"])
        click.echo(f"{r['review_id']}\t{r['status']}\t{r['reason']}\t{r['order_id']}\t"
                   f"{r['channel']}:{r['reference']}\treported {amount}\tvia {r['source']}")


@orders_cmd.command("resolve-review", help="Accept (the order completes) or reject (nothing "
                                           "is credited) a payment review.")
@click.argument("review_id")
@click.option("--accept/--reject", required=True)
@click.option("--note", default=None, help="Why (kept with the review)")
def orders_resolve_review(review_id: str, accept: bool, note: str | None) -> None:
    from kassa.upstreams import service as upstreams

    review = _operator_write(lambda conn, ctx: upstreams.resolve_review(
        conn, ctx, review_id=review_id, accept=accept, note=note))
    click.echo(f"{review['review_id']} {review['status']} (order {review['order_id']})")


@main.command(help="Create the demo account (seed sandbox credentials) if missing.")
def demo() -> None:
    settings = _settings()
    upgrade(settings.resolved_database_url)
    _ensure_demo(settings, build_context(settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
