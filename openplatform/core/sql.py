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

import psycopg
from django.db import connection
from django.db.models import Model


def available() -> bool:
    return connection.vendor == "postgresql"


class _PreparedCursor(psycopg.Cursor):
    """Prepares each statement on the server (the first run parses and plans it, later runs reuse the plan)."""

    def execute(self, query, params=None, *, prepare=None, binary=None):
        return super().execute(query, params, prepare=True if prepare is None else prepare, binary=binary)


def execute(sql: str, params, *, rows: bool = True) -> list[tuple]:
    """Run one statement through Django's cursor wrapper (error translation, query log) around a
    server-side-binding psycopg cursor on Django's connection; its rows (`rows=False`: one that returns none)."""
    pooled = connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")  # DATABASE_TRANSACTION_POOLING
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = (psycopg.Cursor if pooled else _PreparedCursor)(connection.connection)
    with connection._prepare_cursor(raw) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if rows else []


def quote(name: str) -> str:
    return connection.ops.quote_name(name)


def columns(model: type[Model], alias: str) -> str:
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def build(model: type[Model], values) -> Model:
    """A model instance from its concrete columns' values, through each field's from_db_value."""
    converted = []
    for f, value in zip(model._meta.concrete_fields, values, strict=True):
        from_db_value = getattr(f, "from_db_value", None)  # JSONField's (Django loads jsonb as text)
        converted.append(from_db_value(value, None, connection) if from_db_value and value is not None else value)
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], converted)


def width(model: type[Model]) -> int:
    return len(model._meta.concrete_fields)


