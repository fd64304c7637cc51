"""The CLI as a user runs it: real subprocesses, a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from kassa.accounts import service as accounts
from kassa.db.tables import metadata
from tests.support.harness import SERVER_KEY, KassaServer, free_port, make_settings


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
    env.update({"KASSA_DATA_DIR": str(data_dir), "KASSA_SANDBOX_SETTLE_SECONDS": "0.5"})
    return env


def _kassa(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kassa", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def _all_text(db_file: Path) -> str:
    engine = create_engine(f"sqlite:///{db_file}")
    chunks: list[str] = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                chunks.extend(str(v) for v in row)
    engine.dispose()
    return "\n".join(chunks)


def test_help_lists_every_command(tmp_path: Path) -> None:
    out = _kassa("--help", env=_env(tmp_path))
    assert out.returncode == 0
    for command in ("serve", "worker", "migrate", "accounts", "demo"):
        assert command in out.stdout


def test_accounts_create_prints_keys_once_and_stores_only_hashes(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = _kassa("accounts", "create", "--name", "Acme", "--tier", "verified", "--json", env=env)
    assert out.returncode == 0, out.stderr
    account = json.loads(out.stdout)
    assert account["name"] == "Acme" and account["tier"] == "verified"
    modes = {k["mode"]: k for k in account["keys"]}
    assert modes["live"]["api_key"].startswith("zr_live_")
    assert modes["test"]["api_key"].startswith("zr_test_")
    assert account["webhook_secret"].startswith("whsec_")
    stored = _all_text(tmp_path / "kassa.sqlite3")
    for pair in account["keys"]:
        assert pair["api_key"] not in stored
        assert pair["api_secret"] not in stored
    assert account["webhook_secret"] not in stored
    # The human-readable form prints the same kinds of things.
    text = _kassa("accounts", "create", "--name", "Beta", env=env)
    assert text.returncode == 0 and "live key:" in text.stdout and "test secret:" in text.stdout
    listed = _kassa("accounts", "list", env=env)
    assert "Acme" in listed.stdout and "Beta" in listed.stdout
    bad = _kassa("accounts", "create", "--name", "X", "--tier", "gold", env=env)
    assert bad.returncode != 0


def test_serve_demo_runs_the_seed_sandbox_flow(tmp_path: Path) -> None:
    """The README's first command: `kassa serve --demo` on an empty directory."""
    port = free_port()
    env = _env(tmp_path)
    env["KASSA_SECRET_KEY"] = SERVER_KEY
    proc = subprocess.Popen([sys.executable, "-m", "kassa", "serve", "--demo", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("kassa serve --demo did not come up")
            time.sleep(0.1)
        headers = {"Authorization": "Bearer zr_test_sandbox_key_123",
                   "X-API-Secret": "test_secret_456"}
        r = httpx.post(f"{base}/api/v1/tasks", headers=headers, json={
            "title": "Demo", "amount": 5000, "currency": "CNY", "payment_method": "alipay",
            "return_url": "https://your-app.com/payment/success"})
        assert r.status_code == 201, r.text
        order_id = r.json()["payment"]["order_id"]
        deadline = time.monotonic() + 15
        status = ""
        while time.monotonic() < deadline and status != "completed":
            status = httpx.get(f"{base}/api/v1/payment/query", headers=headers,
                               params={"order_id": order_id}).json()["status"]
            time.sleep(0.1)
        assert status == "completed"
        assert httpx.get(f"{base}/openapi.json").json()["openapi"].startswith("3.")
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert "zr_test_sandbox_key_123" in output
    assert "test_secret_456" in output
    assert "webhook secret:" in output and "whsec_" in output
    # Graceful: the worker stopped and the app shut down (uvicorn re-raises SIGTERM after).
    assert "Application shutdown complete" in output, output
    assert proc.returncode in (0, -15), output
    # A second start finds the demo account and does not create another.
    again = _kassa("demo", env=env)
    assert again.returncode == 0 and "Created the demo account" not in again.stdout


def test_demo_account_runs_the_seeds_sandbox_curl_as_printed(tmp_path: Path) -> None:
    """The seed's 'Webhook Testing' curl: no Content-Type, no currency, no return_url,
    paying the demo account's test_task_123."""
    srv = KassaServer(make_settings(tmp_path, f"sqlite:///{tmp_path / 'k.sqlite3'}")).start()
    try:
        created = srv.db.write_sync(lambda conn: accounts.ensure_demo_account(conn, srv.ctx))
        assert created is not None
        assert srv.db.write_sync(lambda conn: accounts.ensure_demo_account(conn, srv.ctx)) is None
        body = ('{\n"task_id": "test_task_123",\n"amount": 5000,\n"payment_method": "alipay",\n'
                '"callback_url": "https://abc123.ngrok.io/webhooks/payment"\n}')
        r = httpx.post(f"{srv.base_url}/api/v1/payment/create", content=body.encode(),
                       headers={"Authorization": "Bearer zr_test_sandbox_key_123",
                                "X-API-Secret": "test_secret_456",
                                "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 201, r.text
        assert (r.json()["currency"], r.json()["status"]) == ("CNY", "pending")
        with srv.client("zr_test_sandbox_key_123", "test_secret_456") as client:
            srv.wait_for_status(client, r.json()["order_id"], "completed")
    finally:
        srv.stop()
