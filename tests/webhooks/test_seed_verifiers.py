"""The seed's own webhook verifiers accept Kassa's deliveries as they are (SPEC §7).

The seed ("Payment Webhooks") shows a Python/Flask and a Node/express receiver that
check `X-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`. Both run here,
unchanged (tests/webhooks/verifiers/), as real receivers Kassa delivers to; a wrong
secret or a changed byte must make them answer 401. Also: X-Signature-V2 checked with
the dozen lines a README would show, and the signatures during a secret rotation.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib.util
import itertools
import os
import re
import shutil
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.support.factories import assert_error, new_task, pay
from tests.support.harness import KassaServer, Merchant, free_port
from tests.support.processes import wait_until
from tests.support.receivers import Received, Receiver
from tests.support.webhook_log import wait_delivery

VERIFIERS = Path(__file__).parent / "verifiers"
EXPRESS_DIR = VERIFIERS / "express"
NPM_INSTALL = "npm ci --prefix tests/webhooks/verifiers/express --no-audit --no-fund"
WRONG_SECRET = "whsec_not-the-accounts-secret-0123456789abcdef"


def unavailable(reason: str) -> None:
    """Like the PostgreSQL tests: skip with the reason, but fail in CI."""
    if os.environ.get("KASSA_REQUIRE_POSTGRES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


# --- the README's X-Signature-V2 check ------------------------------------------------------

def _readme_verify_v2() -> Callable[[bytes, str, str], bool]:
    """`verify_v2` exactly as the README's Webhooks section shows it, so the README's
    dozen lines are what these tests check."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Webhooks"):]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "the README's Webhooks section has no python block"
    code = textwrap.dedent(block.group(1))
    assert "def verify_v2(" in code and len(code.strip().splitlines()) <= 16
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    verify: Callable[[bytes, str, str], bool] = namespace["verify_v2"]
    return verify


verify_v2 = _readme_verify_v2()


def hmac_hex(secret: str, data: bytes) -> str:
    return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


# --- Kassa side -------------------------------------------------------------------------------

def add_endpoint(client: httpx.Client, url: str, **fields: Any) -> str:
    r = client.post("/api/v1/webhooks/endpoints", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    return str(r.json()["endpoint_id"])


def remove_endpoint(client: httpx.Client, endpoint_id: str) -> None:
    """Stop a test's endpoint receiving (and retrying) anything more."""
    r = client.delete(f"/api/v1/webhooks/endpoints/{endpoint_id}")
    assert r.status_code == 200, r.text


def paid_order(server: KassaServer, client: httpx.Client) -> tuple[str, list[dict[str, Any]]]:
    """A sandbox payment, completed: its order_id and its events (created, completed)."""
    r = pay(client, new_task(client))
    assert r.status_code == 201, r.text
    order_id = str(r.json()["order_id"])
    server.wait_for_status(client, order_id, "completed")
    r = client.get("/api/v1/webhooks/events", params={"object_id": order_id})
    assert r.status_code == 200, r.text
    events = sorted(r.json()["data"], key=lambda e: e["sequence"])
    assert [e["event"] for e in events] == ["payment.created", "payment.completed"], events
    return order_id, events






def post_as_kassa(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """Replay a delivery (its raw body and signature headers) to a receiver."""
    sent = {k: v for k, v in headers.items() if k.startswith("x-") or k == "content-type"}
    return httpx.post(url, content=body, headers=sent, timeout=10)


def one_byte_changed(body: bytes) -> bytes:
    """The same delivery with the amount's first digit changed: 5000 -> 9000."""
    tampered = body.replace(b'"amount":5000', b'"amount":9000', 1)
    assert len(tampered) == len(body)
    assert sum(a != b for a, b in zip(tampered, body, strict=True)) == 1
    return tampered


@pytest.fixture(scope="module")
def captured(server: KassaServer) -> Iterator[tuple[Merchant, list[Received]]]:
    """Real deliveries of a payment's two events, as received (raw body and headers)."""
    merchant = server.merchant()
    receiver = Receiver().up()
    endpoint_id = add_endpoint(merchant.test, receiver.url)
    try:
        paid_order(server, merchant.test)
        got = receiver.wait_for_events(2)
    finally:
        remove_endpoint(merchant.test, endpoint_id)
        receiver.down()
    assert [r.json["event"] for r in got] == ["payment.created", "payment.completed"]
    yield merchant, got


# --- the seed's Flask receiver ----------------------------------------------------------------

_copies = itertools.count()


@dataclass
class FlaskReceiver:
    module: ModuleType
    port: int
    stop: Callable[[], None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/payment"

    def accepted(self) -> list[str]:
        return list(self.module.accepted())

    def rejected(self) -> list[tuple[int, str | None]]:
        return list(self.module.rejected())


@contextlib.contextmanager
def flask_receiver(secret: str) -> Iterator[FlaskReceiver]:
    """A fresh copy of verifiers/flask_receiver.py with WEBHOOK_SECRET = secret, served by
    werkzeug on 127.0.0.1."""
    if importlib.util.find_spec("flask") is None:
        unavailable("Flask is not installed (the test extra needs flask==3.1.3)")
    from werkzeug.serving import make_server  # noqa: PLC0415 - only when Flask is there

    name = f"kassa_seed_flask_receiver_{next(_copies)}"
    spec = importlib.util.spec_from_file_location(name, VERIFIERS / "flask_receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.WEBHOOK_SECRET = secret
    http = make_server("127.0.0.1", 0, module.app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()

    def stop() -> None:
        http.shutdown()
        http.server_close()
        thread.join(timeout=5)

    try:
        yield FlaskReceiver(module=module, port=http.server_port, stop=stop)
    finally:
        stop()


def test_flask_verifier_accepts_kassas_deliveries(server: KassaServer,
                                                  merchant: Merchant) -> None:
    with flask_receiver(merchant.account.webhook_secret) as flask:
        endpoint_id = add_endpoint(merchant.test, flask.url)
        try:
            _, events = paid_order(server, merchant.test)
            ids = [e["event_id"] for e in events]
            wait_until(lambda: set(ids) <= set(flask.accepted()), timeout=10,
                       message=lambda: f"accepted {flask.accepted()}, wanted {ids}")
            for event_id in ids:
                d = wait_delivery(merchant.test, event_id, endpoint_id,
                                  lambda d: d["status"] != "pending")
                assert (d["status"], d["last_status_code"], d["last_error"]) == (
                    "succeeded", 200, None), d
                assert d["attempt_count"] == 1
                assert '"received"' in d["attempts"][0]["response_excerpt"]
            assert flask.rejected() == []
            assert sorted(flask.accepted()) == sorted(ids)  # each once
        finally:
            remove_endpoint(merchant.test, endpoint_id)


def test_flask_verifier_with_a_wrong_secret_rejects_and_kassa_retries(
        server: KassaServer, merchant: Merchant) -> None:
    with flask_receiver(WRONG_SECRET) as flask:
        endpoint_id = add_endpoint(merchant.test, flask.url)
        try:
            _, events = paid_order(server, merchant.test)
            first = events[0]["event_id"]
            d = wait_delivery(merchant.test, first, endpoint_id,
                              lambda d: d["attempt_count"] >= 2 and len(d["attempts"]) >= 2)
            assert d["last_status_code"] == 401, d
            assert d["status"] in {"pending", "failed"}, d  # retried, never succeeded
            assert all(a["status_code"] == 401 for a in d["attempts"]), d["attempts"]
            assert all(a["error"] == "HTTP 401" for a in d["attempts"]), d["attempts"]
            assert "Invalid signature" in d["attempts"][0]["response_excerpt"]
            assert flask.accepted() == []
            assert {e for _, e in flask.rejected()} == {first}  # later events wait in order
        finally:
            remove_endpoint(merchant.test, endpoint_id)


def test_flask_verifier_rejects_a_changed_byte(captured: tuple[Merchant, list[Received]]
                                               ) -> None:
    merchant, got = captured
    delivery = got[0]
    with flask_receiver(merchant.account.webhook_secret) as flask:
        r = post_as_kassa(flask.url, one_byte_changed(delivery.body), delivery.headers)
        assert r.status_code == 401, r.text
        assert r.json() == {"error": "Invalid signature"}
        no_signature = {k: v for k, v in delivery.headers.items() if k != "x-signature"}
        r = post_as_kassa(flask.url, delivery.body, no_signature)
        assert (r.status_code, r.json()) == (401, {"error": "Missing signature"})
        assert flask.accepted() == []
        # The very same bytes, unchanged, are accepted.
        for received in got:
            r = post_as_kassa(flask.url, received.body, received.headers)
            assert (r.status_code, r.json()) == (200, {"status": "received"}), r.text
        assert flask.accepted() == [r.json["event_id"] for r in got]


# --- the seed's express receiver --------------------------------------------------------------

@dataclass
class ExpressReceiver:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/payment"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def answers(self) -> list[tuple[int, str]]:
        return [(int(s), e) for s, e in re.findall(r"^answered (\d+) (\S+)$", self.output(),
                                                   flags=re.MULTILINE)]

    def accepted(self) -> list[str]:
        return [e for s, e in self.answers() if s == 200]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def express_receiver(secret: str, tmp: Path) -> Iterator[ExpressReceiver]:
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed: the seed's express verifier can't run")
    if not (EXPRESS_DIR / "node_modules" / "express" / "package.json").is_file():
        unavailable(f"express is not installed for the seed's verifier: run `{NPM_INSTALL}`")
    assert node is not None
    port = free_port()
    log = tmp / f"express-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
    env.update({"PORT": str(port), "WEBHOOK_SECRET": secret})
    with log.open("wb") as out:
        proc = subprocess.Popen([node, "server.js"], cwd=EXPRESS_DIR, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    receiver = ExpressReceiver(proc=proc, port=port, log=log)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"node server.js exited:\n{receiver.output()}")
            return _port_open(port)

        wait_until(listening, timeout=15, message=receiver.output)
        yield receiver
    finally:
        proc.kill()  # by its own pid
        proc.wait(timeout=10)


def test_express_verifier_accepts_kassas_deliveries_and_rejects_forgeries(
        server: KassaServer, merchant: Merchant, tmp_path: Path,
        captured: tuple[Merchant, list[Received]]) -> None:
    secret = merchant.account.webhook_secret
    with express_receiver(secret, tmp_path) as good, \
            express_receiver(WRONG_SECRET, tmp_path) as wrong:
        good_id = add_endpoint(merchant.test, good.url)
        wrong_id = add_endpoint(merchant.test, wrong.url)
        try:
            _, events = paid_order(server, merchant.test)
            ids = [e["event_id"] for e in events]
            wait_until(lambda: set(ids) <= set(good.accepted()), timeout=10,
                       message=good.output)
            for event_id in ids:
                d = wait_delivery(merchant.test, event_id, good_id,
                                  lambda d: d["status"] != "pending")
                assert (d["status"], d["last_status_code"]) == ("succeeded", 200), d
            assert [s for s, _ in good.answers()] == [200, 200], good.output()
            assert f"Payment completed: {events[1]['data']['order_id']}" in good.output()

            # The same deliveries, signed with the account's secret, are refused by a
            # receiver that has another one; Kassa logs the 401 and retries.
            d = wait_delivery(merchant.test, ids[0], wrong_id,
                              lambda d: d["attempt_count"] >= 2 and len(d["attempts"]) >= 2)
            assert d["last_status_code"] == 401 and d["status"] in {"pending", "failed"}, d
            assert wrong.accepted() == []
            assert {e for s, e in wrong.answers() if s == 401} == {ids[0]}
        finally:
            remove_endpoint(merchant.test, good_id)
            remove_endpoint(merchant.test, wrong_id)

    # Replays of a real delivery of another account: one byte changed -> 401.
    other, got = captured
    with express_receiver(other.account.webhook_secret, tmp_path) as replay:
        delivery = got[1]
        r = post_as_kassa(replay.url, one_byte_changed(delivery.body), delivery.headers)
        assert (r.status_code, r.json()) == (401, {"error": "Invalid signature"})
        r = post_as_kassa(replay.url, delivery.body,
                          {**delivery.headers, "x-signature": f"sha256={'0' * 64}"})
        assert r.status_code == 401
        r = post_as_kassa(replay.url, delivery.body, delivery.headers)
        assert (r.status_code, r.json()) == (200, {"status": "received"})
        wait_until(lambda: len(replay.answers()) == 3, timeout=5, message=replay.output)
        assert replay.answers() == [(401, delivery.json["event_id"])] * 2 + [
            (200, delivery.json["event_id"])]


# --- X-Signature-V2 ---------------------------------------------------------------------------

def test_signature_v2_verifies_real_deliveries(captured: tuple[Merchant, list[Received]]
                                               ) -> None:
    merchant, got = captured
    secret = merchant.account.webhook_secret
    for delivery in got:
        header = delivery.headers["x-signature-v2"]
        stamp = delivery.headers["x-signature-timestamp"]
        assert re.fullmatch(r"t=(\d+),v1=[0-9a-f]{64}", header), header
        assert header.startswith(f"t={stamp},")
        assert abs(time.time() - int(stamp)) < 120
        assert verify_v2(delivery.body, header, secret)
        # The seed's X-Signature is there too, over the body alone.
        assert delivery.headers["x-signature"] == f"sha256={hmac_hex(secret, delivery.body)}"
        assert "x-signature-previous" not in delivery.headers

        # Rejected: a changed byte, another secret, a changed timestamp.
        assert not verify_v2(one_byte_changed(delivery.body), header, secret)
        assert not verify_v2(delivery.body, header, WRONG_SECRET)
        assert not verify_v2(delivery.body, header.replace(f"t={stamp}", f"t={int(stamp) + 1}"),
                             secret)
        assert not verify_v2(delivery.body, header.split(",")[0], secret)
        assert not verify_v2(delivery.body, "", secret)


def test_signature_v2_rejects_old_timestamps(captured: tuple[Merchant, list[Received]]) -> None:
    merchant, got = captured
    secret, body = merchant.account.webhook_secret, got[0].body
    now = int(time.time())

    def header(t: int) -> str:
        return f"t={t},v1={hmac_hex(secret, f'{t}.'.encode() + body)}"

    assert verify_v2(body, header(now - 290), secret)
    assert not verify_v2(body, header(now - 310), secret)  # a replay, 5 minutes later
    assert not verify_v2(body, header(now + 310), secret)
    assert verify_v2(body, header(now - 3600), secret, tolerance=7200)
    # A real delivery's header is a replay once the tolerance has passed.
    real = got[0].headers["x-signature-v2"]
    stamp = int(got[0].headers["x-signature-timestamp"])
    wait_until(lambda: time.time() >= stamp + 2, timeout=5)
    age = int(time.time()) - stamp
    assert not verify_v2(body, real, secret, tolerance=age - 1)
    assert verify_v2(body, real, secret, tolerance=age + 5)


# --- secret rotation --------------------------------------------------------------------------

def get_secret(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/api/v1/webhooks/secret")
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"webhook_secret", "previous_secret_expires_at"}
    return dict(r.json())


def rotate(client: httpx.Client, grace: int) -> dict[str, Any]:
    r = client.post("/api/v1/webhooks/secret/rotate", json={"grace_period_seconds": grace})
    assert r.status_code == 200, r.text
    return dict(r.json())


def v1_values(header: str) -> list[str]:
    return [p.partition("=")[2] for p in header.split(",") if p.startswith("v1=")]


def test_secret_rotation_signs_with_both_secrets_during_the_grace_period(
        server: KassaServer, merchant: Merchant) -> None:
    old = merchant.account.webhook_secret
    assert get_secret(merchant.live) == {"webhook_secret": old,
                                         "previous_secret_expires_at": None}
    # Reading or rotating the secret needs X-API-Secret.
    with server.client(merchant.live_key) as key_only:
        assert_error(key_only.get("/api/v1/webhooks/secret"), 401, "invalid_credentials")
        assert_error(key_only.post("/api/v1/webhooks/secret/rotate", json={}), 401,
                     "invalid_credentials")
    assert get_secret(merchant.live)["webhook_secret"] == old
    # The secret signs live deliveries too: test keys may neither read nor rotate it.
    assert_error(merchant.test.get("/api/v1/webhooks/secret"), 403, "live_key_required")
    assert_error(merchant.test.post("/api/v1/webhooks/secret/rotate", json={}), 403,
                 "live_key_required")

    receiver = Receiver().up()
    endpoint_id = add_endpoint(merchant.test, receiver.url)
    try:
        rotated = rotate(merchant.live, 3600)
        new = rotated["webhook_secret"]
        assert new.startswith("whsec_") and new != old
        until = datetime.fromisoformat(rotated["previous_secret_expires_at"])
        # Grace is business time: the server clock (some tests move the shared one on).
        expected = server.ctx.clock.now() + timedelta(seconds=3600)
        assert abs(until - expected) < timedelta(seconds=60)
        assert get_secret(merchant.live) == rotated
        # Each mode reads the account's one secret.
        assert get_secret(merchant.live)["webhook_secret"] == new

        _, events = paid_order(server, merchant.test)
        got = receiver.wait_for_events(2)
        assert [r.json["event_id"] for r in got] == [e["event_id"] for e in events]
        for delivery in got:
            body, h = delivery.body, delivery.headers
            assert h["x-signature"] == f"sha256={hmac_hex(new, body)}"
            assert h["x-signature-previous"] == f"sha256={hmac_hex(old, body)}"
            t = h["x-signature-timestamp"]
            signed = f"{t}.".encode() + body
            assert v1_values(h["x-signature-v2"]) == [hmac_hex(new, signed),
                                                      hmac_hex(old, signed)]
            assert verify_v2(body, h["x-signature-v2"], new)
            assert verify_v2(body, h["x-signature-v2"], old)
            assert not verify_v2(body, h["x-signature-v2"], WRONG_SECRET)

        # No grace: only the newest secret signs, from the next delivery on.
        newest = rotate(merchant.live, 0)
        assert newest["previous_secret_expires_at"] is None
        assert newest["webhook_secret"] not in {old, new}
        assert get_secret(merchant.live) == newest
        before = len(receiver.received())
        paid_order(server, merchant.test)
        got = receiver.wait_for(lambda rs: len(rs) >= before + 2)[before:]
        for delivery in got:
            body, h = delivery.body, delivery.headers
            assert "x-signature-previous" not in h
            assert h["x-signature"] == f"sha256={hmac_hex(newest['webhook_secret'], body)}"
            assert len(v1_values(h["x-signature-v2"])) == 1
            assert verify_v2(body, h["x-signature-v2"], newest["webhook_secret"])
            assert not verify_v2(body, h["x-signature-v2"], new)
            assert not verify_v2(body, h["x-signature-v2"], old)
    finally:
        remove_endpoint(merchant.test, endpoint_id)
        receiver.down()
