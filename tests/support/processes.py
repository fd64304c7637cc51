"""Real `kassa worker` processes for multi-process tests, and polling helpers.

Every process started here is killed by its own pid when the `with` block ends,
whatever happens in the test; nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.pool import NullPool

from kassa.config import Settings
from tests.support.harness import subprocess_env

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], *, timeout: float, interval: float = 0.05,
               message: str | Callable[[], str] = "condition not met") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f} s: {text}")
        time.sleep(interval)


class Reader:
    """Plain reads of the database, outside any server or worker.

    A fresh connection per call, no write lock: on SQLite (WAL) this never waits
    for a worker that holds the write lock, even one that is stopped or killed.
    """

    def __init__(self, settings: Settings) -> None:
        self.engine: Engine = create_engine(settings.resolved_database_url, poolclass=NullPool)

    def __call__(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn, conn.begin():
            return fn(conn)

    def close(self) -> None:
        self.engine.dispose()


class WorkerProcess:
    """One `python -m kassa worker` subprocess on the settings' database."""

    def __init__(self, settings: Settings, log_path: Path, **env: Any) -> None:
        self.settings = settings
        self.log_path = log_path
        self.env = subprocess_env(settings)
        self.env.update({f"KASSA_{k.upper()}": str(v) for k, v in env.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kassa", "worker", "--log-level", "info"],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=str(self.settings.data_dir),
        )
        return self

    def wait_started(self, timeout: float = 20.0) -> str:
        """Wait for the worker's "worker <name> started" log line; returns its name."""

        def started() -> str | None:
            if not self.alive():
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            found = re.search(r"worker (\S+) started", self.log())
            return found.group(1) if found else None

        name = wait_until(started, timeout=timeout, message=self.log_tail)
        assert name is not None
        return name

    @property
    def pid(self) -> int:
        assert self.proc is not None, "worker not started"
        return self.proc.pid

    def owns(self, worker_name: str | None) -> bool:
        """Whether a `locked_by` / `worker` value names this process (host:pid:random)."""
        if not worker_name:
            return False
        parts = worker_name.rsplit(":", 2)
        return len(parts) == 3 and parts[1] == str(self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        if self._log is not None:
            self._log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no clean-up at all, as if the machine lost the process."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL also ends a stopped process
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (the worker stops between jobs), SIGKILL if it does not exit in time."""
        assert self.proc is not None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.contextmanager
def worker_processes(settings: Settings, log_dir: Path, count: int = 1,
                     **env: Any) -> Iterator[list[WorkerProcess]]:
    """Start `count` workers now; all are killed (by pid) when the block ends."""
    workers = [WorkerProcess(settings, log_dir / f"worker-{i}.log", **env)
               for i in range(count)]
    try:
        for w in workers:
            w.start()
        yield workers
    finally:
        for w in workers:
            w.close()
