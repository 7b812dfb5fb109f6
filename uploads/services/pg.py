"""The upload path's statements on PostgreSQL: one round trip for each step (docs/architecture.md §7, "Cost").

- accept: one statement finds the authorizer and a reusable earlier upload of the same bytes and, when
  there is none, INSERTs the upload row and its bytes (data-modifying CTEs), the bytes sent as a binary
  parameter, not as a hex-escaped literal twice their size;
- task: the claim (a conditional UPDATE) returns the upload, its authorizer, its bytes and a reusable
  earlier upload; the result, its attempt rows and the webhook event are written by one statement
  that changes nothing unless this run still holds its lease (compare-and-set on `lease_until`).

Each is a single statement, so it is atomic without BEGIN/COMMIT. Statements go through Django's cursor
wrapper (errors become django.db errors, tests and the bench see them in the query log) around a
psycopg cursor with server-side binding. They are prepared on the server (parsed and planned once per
connection) unless a pooler in transaction mode sits in front (DATABASE_TRANSACTION_POOLING). Other
databases (SQLite for `make run`) take the ORM path of the callers, which does the same in more steps.
"""

# ruff: noqa: S608 -- identifiers come from the models' metadata, every value is a bound parameter

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache

import psycopg
from django.db import models

from openplatform.core import sql
from openplatform.core.sql import build, columns, current, execute, quote, width
from tenants.models import Authorizer
from uploads.models import Upload, UploadAttempt, UploadBlob
from uploads.services.dedupe import Reusable


def available() -> bool:
    return sql.available()


_REUSABLE = """
    LEFT JOIN LATERAL (
        SELECT e.id, e.reused_from_id, e.url FROM {upload} e
        WHERE %(dedupe)s AND e.authorizer_id = {authorizer_id} AND e.tenant_id = {tenant_id}
          AND e.sha256 = {sha256} AND e.status = 'succeeded' AND e.finished_at >= %(since)s AND e.url <> ''
          {not_itself}
        ORDER BY e.finished_at DESC LIMIT 1
    ) r ON TRUE"""


def _reusable(row_tail) -> Reusable | None:
    """The earlier upload's URL and the first upload of these bytes (followed through its own reuse)."""
    pk, root, url = row_tail
    return Reusable(upload_id=root or pk, url=url) if pk is not None else None


# -- parameters --------------------------------------------------------------------------------------------

#: Fields whose value PostgreSQL takes as the attribute holds it, once it has the field's Python type (str,
#: bool, an aware datetime, a UUID, None): for these, Field.get_db_prep_save returns its argument on this
#: backend, after about 10 us of Django's field and connection layers per field, 30 fields per upload.
#: An integer is wrapped in the psycopg type Django gives its field (Int4 for an IntegerField), so that
#: PostgreSQL sees the same parameter types. JSONField (wrapped for psycopg) and any other field still go
#: through get_db_prep_save. tests/test_upload_cost.py holds the two ways equal for every column.
_SENT_AS_IS = (models.UUIDField, models.CharField, models.TextField, models.BooleanField, models.DateTimeField,
               models.ForeignKey)
_DJANGO = object()  # the value goes through get_db_prep_save


def _how(field: models.Field):
    """None: sent as is; a psycopg integer type to wrap it in; or _DJANGO."""
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return _DJANGO  # pre_save stamps it
    if isinstance(field, _SENT_AS_IS):
        return None
    if isinstance(field, models.IntegerField):
        integer_types = getattr(current().ops, "integerfield_type_map", None)  # psycopg 3's
        if integer_types is not None and field.get_internal_type() in integer_types:
            return integer_types[field.get_internal_type()]
    return _DJANGO


@cache
def _insert_plan() -> tuple:
    """(parameter, field, attname, how) for each column of an upload but authorizer_id (a.id)."""
    return tuple((f"f{i}", f, f.attname, _how(f)) for i, f in enumerate(Upload._meta.concrete_fields)
                 if f.attname != "authorizer_id")


def _param(field: models.Field, how, value, conn):
    """`value` as the statement sends it for `field` (`how` from _how)."""
    if how is None or value is None:
        return value
    if how is _DJANGO:
        return field.get_db_prep_save(value, conn)
    return how(value)


def insert_params(upload: Upload) -> dict:
    """The INSERT's parameters for `upload`'s columns: what Field.get_db_prep_save(Field.pre_save()) gives."""
    conn, values = current(), upload.__dict__
    return {name: _param(field, how, field.pre_save(upload, True) if how is _DJANGO else values[attname], conn)
            for name, field, attname, how in _insert_plan()}


@cache
def _field_plan(name: str) -> tuple:
    field = Upload._meta.get_field(name)
    return field, _how(field)


# -- accept ------------------------------------------------------------------------------------------------


@cache
def _insert_for_appid_sql() -> str:
    u, a, b = quote(Upload._meta.db_table), quote(Authorizer._meta.db_table), quote(UploadBlob._meta.db_table)
    reusable = _REUSABLE.format(upload=u, authorizer_id="a.id", tenant_id="%(tenant)s", sha256="%(sha256)s",
                                not_itself="")
    fields = Upload._meta.concrete_fields
    names = ", ".join(quote(f.column) for f in fields)
    values = ", ".join("a.id" if f.attname == "authorizer_id" else f"%(f{i})s" for i, f in enumerate(fields))
    return (f"WITH a AS (SELECT {columns(Authorizer, 'a')}, r.id AS r_id, r.reused_from_id AS r_root, r.url AS r_url "
            f"FROM {a} a {reusable} WHERE a.tenant_id = %(tenant)s AND a.appid = %(appid)s "
            "ORDER BY a.appid, a.id LIMIT 1), "
            f"u AS (INSERT INTO {u} ({names}) SELECT {values} FROM a WHERE a.r_id IS NULL RETURNING {quote('id')}), "
            f"bl AS (INSERT INTO {b} ({quote('upload_id')}, {quote('data')}) SELECT u.{quote('id')}, %(data)s FROM u) "
            "SELECT a.*, (SELECT count(*) FROM u) FROM a")


def upload_insert_for_appid(upload: Upload, data: bytes, *, appid: str,
                            since: datetime | None) -> tuple[Authorizer | None, Reusable | None, bool]:
    """The accept path in one statement: find the tenant's authorizer with `appid` and the newest succeeded
    upload of these bytes to it since `since` (None: deduplication off); when there is no such upload,
    INSERT `upload` for that authorizer, with its bytes. Returns (authorizer, reusable, inserted): nothing
    is inserted for an unknown appid or when a reusable upload was found (the caller decides then).
    Raises IntegrityError as save() would (a concurrent request with the same Idempotency-Key)."""
    params = insert_params(upload)
    params.update(tenant=upload.tenant_id, appid=appid, sha256=upload.sha256, data=data,
                  dedupe=since is not None, since=since or datetime.max)
    rows = execute(_insert_for_appid_sql(), params)
    if not rows:
        return None, None, False
    n = width(Authorizer)
    authorizer, found, inserted = build(Authorizer, rows[0][:n]), _reusable(rows[0][n : n + 3]), bool(rows[0][n + 3])
    upload.authorizer = authorizer
    if inserted:
        upload._state.adding = False
        upload._state.db = current().alias
    return authorizer, found, inserted


# -- task --------------------------------------------------------------------------------------------------


@cache
def _claim_sql() -> str:
    u, a, b = quote(Upload._meta.db_table), quote(Authorizer._meta.db_table), quote(UploadBlob._meta.db_table)
    reusable = _REUSABLE.format(upload=u, authorizer_id="c.authorizer_id", tenant_id="c.tenant_id",
                                sha256="c.sha256", not_itself="AND e.id <> c.id AND c.dedupe")
    # The row is found by its primary key alone and locked; whether it is due is decided on the locked
    # row. (With the due condition in the same WHERE, a generic plan could find the row through the
    # in-flight index instead, reading every queued upload per claim: docs/architecture.md §7, "Plans
    # that stay cheap as the table grows".) FOR UPDATE waits for a concurrent claim and then sees the
    # row it left, so of two deliveries at once exactly one gets it (the other sees `uploading` with a
    # live lease).
    return f"""
        WITH target AS (
            SELECT id, status AS was, next_attempt_at, lease_until FROM {u} WHERE id = %(id)s FOR UPDATE
        ), c AS (
            UPDATE {u} up SET status = 'uploading', started_at = %(now)s, lease_until = %(lease)s,
                updated_at = %(now)s
            FROM target WHERE up.id = target.id AND (
                (target.was = 'queued' AND (target.next_attempt_at <= %(now)s OR target.next_attempt_at IS NULL))
                OR (target.was = 'uploading' AND target.lease_until < %(now)s))
            RETURNING up.*, target.was
        )
        SELECT c.was, {columns(Upload, 'c')}, {columns(Authorizer, 'a')}, bl.data, r.id, r.reused_from_id, r.url
        FROM c JOIN {a} a ON a.id = c.authorizer_id
        LEFT JOIN {b} bl ON bl.upload_id = c.id
        {reusable}"""


@dataclass
class Claimed:
    upload: Upload
    took_over: bool
    data: bytes | None
    reusable: Reusable | None


def upload_claim(*, upload_id, now: datetime, lease_until: datetime, since: datetime | None) -> Claimed | None:
    """Claim a due upload (or one whose lease ran out) and load it, its authorizer, bytes and a reusable
    earlier upload: one statement. None when it is not this run's to take."""
    rows = execute(_claim_sql(), {"id": upload_id, "now": now, "lease": lease_until,
                                   "dedupe": since is not None, "since": since or datetime.max}, binary=True,
                   health_check=True)  # the task's first statement; safe to run twice (sql.execute)
    if not rows:
        return None
    row = rows[0]
    nu, na = width(Upload), width(Authorizer)
    upload = build(Upload, row[1 : 1 + nu])
    upload.authorizer = build(Authorizer, row[1 + nu : 1 + nu + na])
    data = row[1 + nu + na]
    return Claimed(upload=upload, took_over=row[0] == Upload.Status.UPLOADING,
                   data=bytes(data) if data is not None else None, reusable=_reusable(row[2 + nu + na :]))


@cache
def _quoted_column(name: str) -> str:
    return quote(Upload._meta.get_field(name).column)


_ATTEMPT_COLUMNS = ("number", "started_at", "duration_ms", "http_status", "errcode", "errmsg", "outcome",
                    "token_generation", "worker", "reused_upload_id")
_ATTEMPT_TYPES = ("integer", "timestamptz", "double precision", "integer", "integer", "text", "text",
                  "integer", "text", "uuid")


def upload_result_write(*, upload: Upload, lease_until: datetime, values: dict, attempts: list[UploadAttempt],
                        event: tuple[str, dict] | None, now: datetime) -> tuple[bool, uuid.UUID | None]:
    """Write the run's result (`values`, field name -> value), its attempt rows and its webhook event, only
    while the run still holds its lease. Returns (written, id of an event to dispatch).

    The event is marked dispatched at once when its tenant has no enabled endpoint (nobody to deliver
    to, no dispatch task); it stays in the catch-up API either way.
    """
    sql, params = _result_statement(upload=upload, lease_until=lease_until, values=values, attempts=attempts,
                                    event=event, now=now)
    written, to_dispatch = execute(sql, params)[0]
    return bool(written), to_dispatch


def _result_statement(*, upload: Upload, lease_until: datetime, values: dict, attempts: list[UploadAttempt],
                      event: tuple[str, dict] | None, now: datetime) -> tuple[str, dict]:
    from webhooks.models import WebhookEndpoint, WebhookEvent

    u = quote(Upload._meta.db_table)
    params: dict = {"id": upload.pk, "lease": lease_until, "now": now}
    sets = []
    conn = current()
    for i, (name, value) in enumerate(values.items()):
        f, how = _field_plan(name)
        sets.append(f"{_quoted_column(name)} = %(s{i})s")
        params[f"s{i}"] = _param(f, how, value, conn)
    # As in the claim: the row by its primary key, locked, and the lease compared on the locked row (with
    # `status = 'uploading'` in the UPDATE's own WHERE, a generic plan read the in-flight index instead).
    parts = [f"t AS (SELECT id, status, lease_until FROM {u} WHERE id = %(id)s FOR UPDATE)",
             f"u AS (UPDATE {u} up SET {', '.join(sets)} FROM t WHERE up.id = t.id AND t.status = 'uploading' "
             "AND t.lease_until = %(lease)s RETURNING up.id, up.tenant_id)"]
    if attempts:
        rows = []
        for j, attempt in enumerate(attempts):
            cells = []
            for k, (column, kind) in enumerate(zip(_ATTEMPT_COLUMNS, _ATTEMPT_TYPES, strict=True)):
                params[f"a{j}_{k}"] = getattr(attempt, column)
                cells.append(f"%(a{j}_{k})s::{kind}")
            rows.append(f"({', '.join(cells)})")
        columns = ", ".join(quote(c) for c in ("upload_id", *_ATTEMPT_COLUMNS))
        parts.append(f"att AS (INSERT INTO {quote(UploadAttempt._meta.db_table)} ({columns}) "
                     f"SELECT u.id, v.* FROM u, (VALUES {', '.join(rows)}) AS v({', '.join(_ATTEMPT_COLUMNS)}))")
    select_event = "NULL::uuid"
    if event is not None:
        event_type, data = event
        params.update(event_id=uuid.uuid4(), event_type=event_type,
                      event_data=psycopg.types.json.Jsonb(data))
        endpoints = quote(WebhookEndpoint._meta.db_table)
        parts.append(
            f"ev AS (INSERT INTO {quote(WebhookEvent._meta.db_table)} (id, tenant_id, type, data, created_at, "
            "dispatched_at) SELECT %(event_id)s, u.tenant_id, %(event_type)s, %(event_data)s, %(now)s, "
            f"CASE WHEN EXISTS (SELECT 1 FROM {endpoints} p WHERE p.tenant_id = u.tenant_id AND p.enabled) "
            "THEN NULL ELSE %(now)s END FROM u RETURNING id, dispatched_at)")
        select_event = "(SELECT id FROM ev WHERE dispatched_at IS NULL)"
    return f"WITH {', '.join(parts)} SELECT (SELECT count(*) FROM u), {select_event}", params
