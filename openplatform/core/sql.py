"""Hot-path statements on PostgreSQL: one statement, server-side binding, prepared once per connection.

For the few statements that run for every upload (uploads/services/pg.py, tenants/auth.py): the ORM
builds each query anew (about 1 ms of CPU per query on the upload path) and Django's default client-side
binding writes bytea as a hex literal twice its size. Here the SQL text is built once, values travel as
bound parameters (bytes in binary), and PostgreSQL parses and plans each statement once per connection
(not behind a transaction-mode pooler: DATABASE_TRANSACTION_POOLING). Statements still go through
Django's cursor wrapper: database errors are Django's, and the query log (tests, the bench) sees them.
docs/architecture.md §7, "Cost".
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import cache

import psycopg
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.db.models import JSONField, Model


def current():
    """This thread's default database connection (Django's wrapper). `django.db.connection` is a proxy that
    looks the wrapper up again on every attribute read (about 1.5 us each, dozens per statement here): the
    functions below look it up once."""
    return connections[DEFAULT_DB_ALIAS]


def available() -> bool:
    return current().vendor == "postgresql"


class _Cursor(psycopg.Cursor):
    """A psycopg cursor (server-side binding) whose execute() defaults to preparing the statement on the
    server (parsed and planned once per connection) and, if asked, to binary results."""

    prepare_default: bool | None = None
    binary_default: bool | None = None
    #: Set while Django logs queries (tests, DEBUG): psycopg leaves `_query`, which Django's query log
    #: reads, empty when it runs an already prepared statement; it is filled in for the log.
    queries_logged: bool = False

    def execute(self, query, params=None, *, prepare=None, binary=None):
        super().execute(query, params, prepare=self.prepare_default if prepare is None else prepare,
                        binary=self.binary_default if binary is None else binary)
        if self.queries_logged and self._query is None:
            self._query = self._convert_query(query, params)
        return self


def execute(sql: str, params, *, rows: bool = True, binary: bool = False, health_check: bool = False) -> list[tuple]:
    """Run one statement through Django's cursor wrapper (error translation, query log) around a
    server-side-binding psycopg cursor on Django's connection; its rows (`rows=False`: one that returns none).

    `binary`: results in PostgreSQL's binary format (a bytea arrives as its bytes, not as hex text the
    server writes and the client parses; jsonb arrives decoded).

    `health_check`: this statement, the first of a request or a task, is also the reused connection's
    health check (CONN_HEALTH_CHECKS), instead of a `SELECT 1` round trip before it. If the connection
    died while idle (a server restart, a failover, a terminated backend), the statement fails; the
    connection is replaced and the statement runs once more. Only for statements that are safe to run a
    second time: a read, or the upload claim (a second run finds the first one's lease).
    """
    conn = current()
    if health_check and _health_check_pending(conn):
        try:
            result = _execute(conn, sql, params, rows=rows, binary=binary)
        except (OperationalError, InterfaceError):
            if conn.is_usable():
                raise  # the connection is alive: the statement itself failed (a timeout, a lock)
            conn.close()
            result = _execute(conn, sql, params, rows=rows, binary=binary)
        conn.health_check_done = True
        return result
    conn.close_if_health_check_failed()
    return _execute(conn, sql, params, rows=rows, binary=binary)


def _health_check_pending(conn) -> bool:
    """Whether Django would health-check the connection before its next use (and no caller's transaction,
    which a new connection would lose, is open)."""
    return (conn.connection is not None and conn.health_check_enabled
            and not conn.health_check_done and not conn.in_atomic_block)


def _execute(conn, sql: str, params, *, rows: bool, binary: bool) -> list[tuple]:
    conn.ensure_connection()
    raw = _Cursor(conn.connection)
    # Not behind a transaction-mode pooler (DATABASE_TRANSACTION_POOLING), where a prepared statement
    # may meet another server connection.
    raw.prepare_default = None if conn.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS") else True
    raw.binary_default = binary or None
    raw.queries_logged = conn.queries_logged
    with conn._prepare_cursor(raw) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if rows else []


def savepoint_if_in_transaction():
    """Around a statement that may fail (a unique key, a dropped connection): a savepoint when a caller's
    transaction is open, so the failure does not leave that transaction unusable; in autocommit the
    statement is atomic by itself and needs nothing."""
    return transaction.atomic() if current().in_atomic_block else nullcontext()


@cache
def quote(name: str) -> str:
    return current().ops.quote_name(name)


def columns(model: type[Model], alias: str) -> str:
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def build(model: type[Model], values) -> Model:
    """A model instance from its concrete columns' values, through each field's from_db_value."""
    conn = current()
    converted = []
    for f, value in zip(model._meta.concrete_fields, values, strict=True):
        from_db_value = getattr(f, "from_db_value", None)  # JSONField's: Django loads jsonb text as text
        if from_db_value is not None and value is not None and not (isinstance(f, JSONField) and not isinstance(value, str)):
            value = from_db_value(value, None, conn)
        converted.append(value)
    return model.from_db(conn.alias, [f.attname for f in model._meta.concrete_fields], converted)


def width(model: type[Model]) -> int:
    return len(model._meta.concrete_fields)


