"""Summarise a `py-spy record --format raw` profile (collapsed stacks).

    python bench/pyspy_summary.py PROFILE [--rate HZ --seconds S] [--top N]

Prints samples per thread, the top functions by self time (the innermost Python
frame: time spent in C code such as sqlite3, orjson or httptools is charged to the
Python line that called it) and by cumulative time (the function is anywhere on the
stack), and self time grouped by component. With --rate and --seconds, sample counts
are also shown as a share of wall time (for a `--gil` profile: how busy the GIL was).
"""

from __future__ import annotations

import argparse
import linecache
import re
from collections import Counter
from pathlib import Path

# What the innermost frame's source line is doing, read from the source file: py-spy
# charges time in C code to that line, and counts a thread blocked in a C call such as
# SimpleQueue.get() as active.
LINE_KINDS: list[tuple[str, re.Pattern[str]]] = [
    ("waiting: blocked in queue.get()/wait() (py-spy counts it as active)",
     re.compile(r"\.get\((block=True)?\)|\.wait\(")),
    ("DB driver: commit (C; SQLite: incl. WAL fsync)", re.compile(r"\.commit\(\)")),
    ("DB driver: execute/fetch (C: sqlite3 or psycopg, incl. SQLite page I/O)",
     re.compile(r"(cursor|raw|dbapi_connection)\.(execute|executemany|fetch\w*)\(")),
]
# (component, pattern on "function (file:line)") in order; the first match wins.
COMPONENTS: list[tuple[str, re.Pattern[str]]] = [
    (name, re.compile(pattern)) for name, pattern in [
        ("event loop internals (uvloop C: socket I/O, callbacks)",
         r"^Runner\.run \(.*asyncio/runners\.py"),
        ("DB driver: psycopg Python code (queries, adapters, pipeline)", r"[(/]psycopg\w*/"),
        ("SQLAlchemy (compile, params, result rows)", r"[(/]sqlalchemy/"),
        ("pydantic", r"[(/]pydantic(_core)?/"),
        ("rate limiting (limits)", r"[(/]limits/"),
        ("Starlette (routing, request, response)", r"[(/]starlette/"),
        ("HTTP server (uvicorn + httptools)", r"[(/](uvicorn|httptools)/"),
        ("asyncio / uvloop glue", r"[(/](asyncio|uvloop)/"),
        ("threads / queues", r"[(/](threading|queue|concurrent/futures/\w+)\.py"),
        ("Kassa: HTTP edge (auth, dispatch, JSON)", r"[(/]kassa/http/"),
        ("Kassa: database layer", r"[(/]kassa/db/"),
        ("Kassa: worker", r"[(/]kassa/worker/"),
        ("Kassa: services and repositories", r"[(/]kassa/"),
        ("stdlib (other)", r"/lib/python3\.\d+/|\((\w+/)*\w+\.py:\d+\)$"),
    ]
]
_LINE = re.compile(r":\d+\)$")
_SHORTEN = re.compile(r"\(.*?(site-packages/|src/|lib/python3\.\d+/)")
_LOCATION = re.compile(r"\((.+):(\d+)\)$")


def component(frame: str) -> str:
    where = _LOCATION.search(frame)
    if where:
        text = linecache.getline(where[1], int(where[2]))
        for name, pattern in LINE_KINDS:
            if pattern.search(text):
                return name
    for name, pattern in COMPONENTS:
        if pattern.search(frame):
            return name
    return "other"


def function(frame: str) -> str:
    return _SHORTEN.sub("(", _LINE.sub(")", frame))


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread, frames outermost first, count) for every line of the profile."""
    rows = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = "process"
        if parts[0].startswith("thread ("):
            thread = parts[0].split(":", 1)[-1].strip() or parts[0].split(":", 1)[0]
            if thread.startswith("kassa-pg"):
                thread = "kassa-pg (pool threads)"
            parts = parts[1:]
        rows.append((thread, parts, int(count)))
    return rows


def pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:5.1f}%" if total else "  -  "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    rows = parse(args.profile)
    total = sum(c for _, _, c in rows)
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    by_component: Counter[str] = Counter()
    by_component_thread: dict[str, Counter[str]] = {}
    for thread, frames, count in rows:
        threads[thread] += count
        leaf = frames[-1] if frames else "(no Python frame: C code, e.g. the event loop)"
        self_time[function(leaf)] += count
        comp = component(leaf) if frames else "C without Python frames"
        by_component[comp] += count
        by_component_thread.setdefault(thread, Counter())[comp] += count
        for fn in {function(f) for f in frames}:
            cumulative[fn] += count

    wall = args.rate * args.seconds
    print(f"--- py-spy summary: {args.profile.name}, {total} samples")
    print("samples per thread (share of samples"
          + (", share of wall time)" if wall else ")"))
    for thread, n in threads.most_common():
        extra = f"  {pct(n, int(wall))} of wall" if wall else ""
        print(f"  {pct(n, total)}  {n:7d}  {thread}{extra}")
    print("self time by component (all threads)")
    for comp, n in by_component.most_common():
        print(f"  {pct(n, total)}  {comp}")
    for thread, counter in sorted(by_component_thread.items(), key=lambda kv: -threads[kv[0]]):
        if threads[thread] < total * 0.05:
            continue
        print(f"self time by component, thread {thread}")
        for comp, n in counter.most_common(8):
            print(f"  {pct(n, threads[thread])}  {comp}")
    print(f"top {args.top} functions by self time")
    for fn, n in self_time.most_common(args.top):
        print(f"  {pct(n, total)}  {fn}")
    print(f"top {args.top} functions by cumulative time")
    for fn, n in cumulative.most_common(args.top):
        print(f"  {pct(n, total)}  {fn}")


if __name__ == "__main__":
    main()
