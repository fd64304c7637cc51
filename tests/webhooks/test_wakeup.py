"""A new event goes out at once, not at the worker's next poll: PostgreSQL wakes every
worker when events commit (LISTEN/NOTIFY from a trigger), and `kassa serve` wakes its
own worker after each write it commits (any database)."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.conftest import require_postgres
from tests.support.factories import new_task, pay
from tests.support.harness import KassaServer, fresh_postgres_database, make_settings
from tests.support.receivers import Receiver

LONG_POLL = 60.0  # without a wake-up, nothing would go out for up to a minute
INSERT_EVENT = ("INSERT INTO events (event_id, account_id, mode, event_type, object_id, "
                "sequence, payload_json, fanout_pending, created_at) VALUES "
                "(%s, 'acc_x', 'test', 'payment.created', 'ord_x', 1, '{}', 1, now())")


def assert_an_event_goes_out_at_once(tmp_path: Path, url: str) -> None:
    """A server whose worker polls once a minute still sends a new event within 2 s."""
    receiver = Receiver().up()
    srv = KassaServer(make_settings(tmp_path, url, worker_poll_seconds=LONG_POLL)).start()
    try:
        client = srv.merchant().test
        time.sleep(1.0)  # the worker has looked once and is now waiting its poll out
        created = time.monotonic()
        r = pay(client, new_task(client), callback_url=receiver.url)
        assert r.status_code == 201, r.text
        (got,) = receiver.wait_for(lambda rs: len(rs) >= 1, timeout=10)
        assert got.json["event"] == "payment.created"
        assert got.at - created < 2.0, got.at - created
    finally:
        srv.stop()
        receiver.down()


def test_a_committed_event_wakes_the_deliverer_on_postgres(tmp_path: Path) -> None:
    require_postgres()
    with fresh_postgres_database() as url:
        assert_an_event_goes_out_at_once(tmp_path, url)


def test_only_committed_events_wake_the_listeners(tmp_path: Path) -> None:
    """NOTIFY is transactional: an event insert that rolls back wakes nobody; one that
    commits wakes the listeners."""
    require_postgres()
    with fresh_postgres_database() as url:
        srv = KassaServer(make_settings(tmp_path, url), run_worker=False).start()
        srv.stop()
        plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(plain, autocommit=True) as listener, \
                psycopg.connect(plain) as writer:
            listener.execute("LISTEN kassa_events")
            writer.execute(INSERT_EVENT, ("evt_rolledback",))
            writer.rollback()
            assert list(listener.notifies(timeout=0.5)) == []
            writer.execute(INSERT_EVENT, ("evt_committed",))
            writer.commit()
            assert [n.channel for n in listener.notifies(timeout=2, stop_after=1)] == [
                "kassa_events"]


def test_kassa_serve_wakes_its_own_deliverer_after_a_write(tmp_path: Path) -> None:
    """SQLite has no NOTIFY: the API process wakes its in-process worker itself."""
    assert_an_event_goes_out_at_once(tmp_path, f"sqlite:///{tmp_path / 'k.sqlite3'}")
