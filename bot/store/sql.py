"""Small SQL helpers shared by the store modules."""

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import JSON, Connection, Integer, Select, String, Text, bindparam, cast, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import class_mapper

from bot.db import Database

E = TypeVar("E")


def upsert_insert(db: Database, table: Any) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing / on_conflict_do_update."""
    return (sqlite.insert if db.is_sqlite else postgresql.insert)(table)


def any_of(column: Any, values: Iterable[Any]) -> Any:
    """`column IN (values)` for a fixed set, as ORs: an IN list is re-expanded on every execution,
    which doubles the cost of a hot statement (~25 µs here)."""
    return or_(*(column == value for value in values))


def pulls_asked() -> Any:
    """PostgreSQL: the (project_id, pr_number) pairs of `pulls_params` as a table, to join: one statement for the
    pull requests many callers asked about at once."""
    return select(func.unnest(bindparam("b_projects", type_=postgresql.ARRAY(String))).label("project_id"),
                  func.unnest(bindparam("b_prs", type_=postgresql.ARRAY(Integer))).label("pr_number")).subquery()


def pulls_params(pulls: Iterable[tuple[str, int]]) -> dict[str, list[Any]]:
    """The parameters of `pulls_asked`: each pull request once."""
    unique = list(dict.fromkeys(pulls))
    return {"b_projects": [project for project, _ in unique], "b_prs": [number for _, number in unique]}


def with_scalar_defaults(model: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` and the model's plain (not computed) Python-side defaults of the columns it leaves out, which a
    `Prepared` INSERT must be given."""
    row = dict(values)
    for column in model.__table__.c:
        if column.key not in row and column.default is not None and column.default.is_scalar:
            row[column.key] = column.default.arg
    return row


def insert_unnested(model: Any, columns: Sequence[str]) -> Any:
    """PostgreSQL: an INSERT of any number of rows that is one prepared statement: a parameter a column
    (`b_<column>`, an array of an element a row, from `unnested_params`; a JSON column's as texts), zipped
    back into rows by `unnest`. (A multi-row VALUES is a new statement for every number of rows: SQLAlchemy
    compiles it and PostgreSQL parses and plans it each time.)"""
    table = model.__table__.c
    values = []
    for name in columns:
        kind = table[name].type
        if isinstance(kind, JSON):
            values.append(cast(func.unnest(bindparam(f"b_{name}", type_=postgresql.ARRAY(Text))), JSON).label(name))
            continue
        if isinstance(kind, String) and kind.length:
            # `varchar(n)[]` would cut a longer value without a word: the column refuses it, as a VALUES would.
            kind = String()
        values.append(func.unnest(bindparam(f"b_{name}", type_=postgresql.ARRAY(kind))).label(name))
    return postgresql.insert(model).from_select(list(columns), select(*values))


def unnested_params(model: Any, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """The parameters of `insert_unnested(model, columns)` for `rows`."""
    table = model.__table__.c
    return {f"b_{name}": ([json.dumps(row[name]) for row in rows] if isinstance(table[name].type, JSON)
                          else [row[name] for row in rows])
            for name in columns}


def entities(conn: Connection, stmt: Select[tuple[E]]) -> list[E]:
    """Model instances for `select(Model)`, built from the rows without an ORM session: plain
    snapshots to read (a session's identity map and unit of work cost ~10x the query here)."""
    model = stmt.column_descriptions[0]["entity"]
    return from_rows(model, conn.execute(stmt).mappings())


def entity(conn: Connection, stmt: Select[tuple[E]]) -> E | None:
    found = entities(conn, stmt.limit(1))
    return found[0] if found else None


def from_rows(model: type[E], rows: Iterable[Mapping[str, Any]]) -> list[E]:
    """Instances of `model` from rows of its table's columns (e.g. an INSERT/UPDATE ... RETURNING)."""
    new_instance, keys = _layout(model)
    found = []
    for row in rows:
        instance = new_instance()
        instance.__dict__.update({attr: row[column] for attr, column in keys if column in row})
        found.append(instance)
    return found


def first_from_rows(model: type[E], rows: Iterable[Mapping[str, Any]]) -> E | None:
    """The instance of `model` from the first of `rows` (None: no row)."""
    return next(iter(from_rows(model, rows)), None)


@functools.cache
def _layout(model: type) -> tuple[Callable[[], Any], tuple[tuple[str, str], ...]]:
    mapper = class_mapper(model)
    return mapper.class_manager.new_instance, tuple((prop.key, prop.columns[0].key) for prop in mapper.column_attrs)
