"""Hot statements run on the driver directly (SQLite's, asyncpg), still written once as SQLAlchemy Core.

Running a prebuilt Core statement through `Connection.execute` costs 30-60 µs of Python per execution
here (cache key, execution context, parameter processing, result wrapping), about as much again as
SQLite takes to run it; every webhook of a pull request runs seven statements. A `Prepared` statement
is compiled once per dialect and set of given columns by SQLAlchemy's own compiler, and its parameters
and results pass through SQLAlchemy's own type processors (UTC datetimes, JSON), so what is stored and
read back is what `Connection.execute` would store and read: only the per-execution machinery is
skipped. On PostgreSQL the statement goes to asyncpg through SQLAlchemy's DBAPI adapter (its prepared-
statement cache, its transaction begin), with SQLAlchemy's error handling; a type whose results need
the column types the server reports (Numeric) falls back to `Connection.execute`.

Not for every statement: expanding IN parameters and Python-side column defaults are refused when the
statement is prepared (give every column explicitly), which keeps the fast path exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.sql.elements import ClauseElement

Processor = Callable[[Any], Any] | None
# Run without Connection.execute: SQLite's driver, and asyncpg's (through SQLAlchemy's DBAPI adapter).
_FAST_DIALECTS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Result:
    """Rows as plain tuples in the order of `columns`, and the driver's row count."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    rowcount: int

    def mappings(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the positional parameters' names, in order
    bind: tuple[Processor, ...]
    defaults: Mapping[str, Any]  # values built into the statement (`.values(status="running")`)
    columns: tuple[str, ...]  # what it returns (RETURNING, or a SELECT's columns); empty: nothing
    results: tuple[Processor, ...] | None  # None: no column needs processing


class Prepared:
    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, frozenset[str] | None], _Compiled | None] = {}

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Result:
        params = params or {}
        dialect = conn.dialect
        compiled = self._compile(dialect, params) if dialect.name in _FAST_DIALECTS else None
        if compiled is None:
            result = conn.execute(self.statement, dict(params))
            if not result.returns_rows:
                return Result((), [], result.rowcount)
            return Result(tuple(result.keys()), [tuple(row) for row in result], result.rowcount)
        values = []
        for name, process in zip(compiled.names, compiled.bind):
            value = params[name] if name in params else compiled.defaults[name]
            values.append(process(value) if process is not None else value)
        if dialect.name == "sqlite":
            cursor = conn.connection.driver_connection.execute(compiled.sql, values)  # type: ignore[union-attr]
            rows = cursor.fetchall() if compiled.columns else []
        else:
            # asyncpg through SQLAlchemy's DBAPI adapter, which begins the transaction (none in autocommit
            # mode) and keeps the prepared statements; its errors go through SQLAlchemy's handling, so
            # they are raised as Connection.execute raises them and a lost connection is invalidated.
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(compiled.sql, values)
                rows = [tuple(row) for row in cursor.fetchall()] if compiled.columns else []
            except dialect.loaded_dbapi.Error as exc:
                conn._handle_dbapi_exception(exc, compiled.sql, values, cursor, None)
        if compiled.results is not None:
            processors = compiled.results
            rows = [tuple(p(v) if p is not None else v for p, v in zip(processors, row)) for row in rows]
        return Result(compiled.columns, rows, cursor.rowcount)

    def run_many(self, conn: Connection, params: Iterable[Mapping[str, Any]]) -> list[Result]:
        """One execution per parameter set (SQLite's executemany returns no RETURNING rows)."""
        return [self.run(conn, p) for p in params]

    def _compile(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled | None:
        # INSERTs compile to the columns given; other statements have a fixed set of parameters.
        is_insert = getattr(self.statement, "is_insert", False)
        key = (dialect.name, frozenset(params) if is_insert else None)
        if key in self._compiled:
            return self._compiled[key]
        try:
            found = _compile(self.statement, dialect, sorted(params) if is_insert else None)
        except (ValueError, InvalidRequestError):
            if dialect.name == "sqlite":
                raise
            found = None  # PostgreSQL: Connection.execute (a type that needs the result's column types)
        self._compiled[key] = found
        return found


def _compile(statement: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None) -> _Compiled:
    compiled: Any = statement.compile(dialect=dialect, column_keys=column_keys)
    if compiled.positiontup is None:
        raise ValueError(f"{dialect.name} does not use positional parameters")
    if getattr(compiled, "insert_prefetch", None) or getattr(compiled, "update_prefetch", None):
        raise ValueError("a Prepared statement must give every column with a Python-side default: "
                         f"{[c.key for c in (compiled.insert_prefetch or compiled.update_prefetch)]}")
    binds = compiled.binds
    bind_processors = []
    defaults = {}
    for name in compiled.positiontup:
        bind = binds[name]
        if bind.expanding:
            raise ValueError(f"expanding parameter {name!r} cannot be prepared")
        bind_processors.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
        if not bind.required:
            defaults[name] = bind.effective_value
    # A SELECT's columns, or what an INSERT/UPDATE returns (nothing without RETURNING).
    returned = list(getattr(statement, "exported_columns", ()))
    result_processors = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None)
                              for column in returned)
    return _Compiled(compiled.string, tuple(compiled.positiontup), tuple(bind_processors), defaults,
                     tuple(column.key for column in returned),
                     result_processors if any(result_processors) else None)
