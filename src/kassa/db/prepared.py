"""Prepared statements: SQLAlchemy Core written once, executed on the DB-API cursor.

SQLAlchemy's per-execution machinery (execution context, events, result
proxies) costs ~50 µs a statement on this hardware: more than SQLite itself.
On the hot path a `Prepared` compiles its Core statement once per dialect,
keeps SQLAlchemy's own bind and result processors for the column types, and
runs it on the raw cursor of the *same* connection, inside the same
transaction. The SQL stays SQLAlchemy Core; only the per-call overhead goes.

Not supported (use `conn.execute` for these): expanding IN parameters and
Python-side column defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement, ColumnElement

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    positional: tuple[str, ...] | None  # parameter order for qmark/format drivers
    binds: tuple[tuple[str, Processor], ...]
    defaults: tuple[tuple[str, Any], ...]  # values written into the statement itself
    columns: tuple[str, ...]
    results: tuple[Processor, ...]
    returns_from_dml: bool  # INSERT/UPDATE/DELETE … RETURNING: drain the cursor


class Prepared:
    __slots__ = ("_by_dialect", "_multi", "columns", "statement")

    def __init__(self, statement: Executable, *, columns: Sequence[str] | None = None) -> None:
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._by_dialect: dict[str, _Compiled] = {}
        self._multi: dict[int, Prepared] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        assert isinstance(self.statement, ClauseElement)
        compiled = self.statement.compile(dialect=dialect, column_keys=self.columns)
        assert isinstance(compiled, SQLCompiler)
        binds = []
        defaults = []
        for name, bind in compiled.binds.items():
            if bind.expanding:
                raise ValueError("Prepared does not support expanding IN parameters")
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:  # most types need no conversion: skip them per call
                binds.append((name, proc))
            if not bind.required and bind.callable is None:
                defaults.append((name, bind.value))
        positional = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        out_cols: list[ColumnElement[Any]] = list(
            getattr(self.statement, "exported_columns", ()) or ())
        names = tuple(c.key if c.key is not None else str(c) for c in out_cols)
        results = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None)
                        for c in out_cols)
        sql = str(compiled)
        return _Compiled(sql=sql, positional=positional, binds=tuple(binds),
                         defaults=tuple(defaults), columns=names, results=results,
                         returns_from_dml=sql.lstrip().upper().startswith(
                             ("INSERT", "UPDATE", "DELETE")))

    def _for(self, conn: Connection) -> _Compiled:
        name = conn.dialect.name
        compiled = self._by_dialect.get(name)
        if compiled is None:
            compiled = self._by_dialect[name] = self._compile(conn.dialect)
        return compiled

    @staticmethod
    def _params(c: _Compiled, params: Mapping[str, Any]) -> Any:
        values = {**dict(c.defaults), **params} if c.defaults else dict(params)
        for name, proc in c.binds:
            value = values.get(name)
            if value is not None:
                values[name] = proc(value)  # type: ignore[misc]
        if c.positional is not None:
            return tuple(values[n] for n in c.positional)
        return values

    @staticmethod
    def _execute(conn: Connection, c: _Compiled, params: Any, *, many: bool = False) -> Any:
        """Run on the raw cursor; a driver error is raised as conn.execute would raise it
        (sqlalchemy.exc.IntegrityError etc.), so callers catch one exception family."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            if many:
                cursor.executemany(c.sql, params)
            else:
                cursor.execute(c.sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            raise DBAPIError.instance(
                c.sql, params, exc, conn.dialect.loaded_dbapi.Error,
                hide_parameters=conn.engine.hide_parameters, dialect=conn.dialect,
                ismulti=many) from exc
        return cursor

    def _cursor(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, _Compiled]:
        c = self._for(conn)
        return self._execute(conn, c, self._params(c, params)), c

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Execute; returns the row count."""
        cursor, _ = self._cursor(conn, params or {})
        count = int(cursor.rowcount)
        cursor.close()
        return count

    def run_many(self, conn: Connection, rows: Iterable[Mapping[str, Any]]) -> None:
        """Insert several rows. SQLite: the driver's executemany (C). PostgreSQL: one
        multi-row VALUES statement, one round trip, rather than psycopg's pipeline."""
        rows = list(rows)
        if conn.dialect.name == "postgresql" and len(rows) > 1:
            flat = {f"{k}__{i}": v for i, row in enumerate(rows) for k, v in row.items()}
            self._multi_row(len(rows), rows[0].keys()).run(conn, flat)
            return
        c = self._for(conn)
        self._execute(conn, c, [self._params(c, r) for r in rows], many=True).close()

    def _multi_row(self, n: int, keys: Iterable[str]) -> Prepared:
        prepared = self._multi.get(n)
        if prepared is None:
            names = self.columns or list(keys)
            stmt = self.statement.values(  # type: ignore[attr-defined]
                [{k: bindparam(f"{k}__{i}") for k in names} for i in range(n)])
            prepared = self._multi[n] = Prepared(stmt)
        return prepared

    @staticmethod
    def _row(c: _Compiled, raw: Sequence[Any]) -> dict[str, Any]:
        return {
            name: (proc(value) if proc is not None and value is not None else value)
            for name, proc, value in zip(c.columns, c.results, raw, strict=True)
        }

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None
              ) -> dict[str, Any] | None:
        cursor, c = self._cursor(conn, params or {})
        raw = cursor.fetchone()
        if raw is not None and c.returns_from_dml:
            cursor.fetchall()  # let the driver finish a RETURNING statement
        cursor.close()
        return None if raw is None else self._row(c, raw)

    def all(self, conn: Connection, params: Mapping[str, Any] | None = None
            ) -> list[dict[str, Any]]:
        cursor, c = self._cursor(conn, params or {})
        rows = [self._row(c, raw) for raw in cursor.fetchall()]
        cursor.close()
        return rows

    def scalar(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Any:
        row = self.first(conn, params)
        return None if row is None else next(iter(row.values()))
