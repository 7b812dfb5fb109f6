"""Token leases, refresh margins, and the one single-flight refresh both kinds of token use.

Why these margins (docs/wechat-protocol.md §4, §7, §12): tokens live 7200 s and the old token keeps working
for about 5 minutes after a refresh. A token is refreshed on use when less than
`ON_DEMAND_REFRESH_MARGIN` (300 s, the SDKs' consensus of 200-300 s) is left: a call started with it
finishes well inside its life. The beat job runs every `SCHEDULED_REFRESH_EVERY`
(settings.TOKEN_REFRESH_EVERY_SECONDS, 240 s by default; its schedule is written from the same setting)
and refreshes tokens with less than `SCHEDULED_REFRESH_WINDOW`, two periods, left: a token is replaced
with one to two periods of life remaining, never later. With the default, when 240-480 s remain: each
token serves at least 6720 s, i.e. at most 12.9 refreshes a day.

Single flight with a refresh lease (docs/architecture.md §3.2, §4): no WeChat call is ever made while a
row lock is held.

1. Claim, in a short transaction under the row lock (`SELECT ... FOR NO KEY UPDATE` on PostgreSQL, with
   a `lock_timeout`; an IMMEDIATE transaction on SQLite): re-read the row; if the token is no longer due,
   serve it; if another caller holds an unexpired lease (`refresh_lease_owner`/`refresh_lease_until`),
   wait (3.); else write our lease and commit.
2. Call WeChat with no transaction open (bounded by the client's timeout and retries), then, in a new
   short transaction, store the result only if the lease is still ours and the generation is the one we
   started from (compare-and-set). A lost lease (it expired and someone took over, or an authorization
   stored newer tokens) discards the result: WeChat keeps every recent token working (docs/wechat-protocol.md
   §4), and a rotated refresh token that was dropped is recovered through 61023 (§7). A failure releases
   the lease, leaves the old token in place and is recorded for the admin and /readyz.
3. Waiters never wait on a lock for the length of a call: they poll the row (short sleeps) for at most
   settings.TOKEN_REFRESH_WAIT_SECONDS. They serve the new token as soon as it is stored. If the wait
   ends, or the refresh they waited for failed (the lease was released with no new token), they serve the
   stored token while it is still good (`STALE_TOKEN_FLOOR` left, and not the one WeChat refused), else
   raise `TokenRefreshPending`, a retryable error: the upload task retries later. A lease that ran out
   with its owner still on it (the worker was killed or hung) is taken over by the next caller.

A token (the component's, an authorizer's) is described by a small `TokenSource`; the modes are
separate functions:

- `token_get`: on demand; the stored token while more than the margin is left, else a refresh.
- `token_refresh_ahead`: refresh when less than a margin is left (the beat passes its wider window).
- `token_refresh_after_failure`: a call failed with generation g: replace the token only if g is
  still current (compare-and-expire), so a late report never throws away a newer token.
- `token_force_refresh`: an operator's "a new token now"; with `invalidate_previous`, the "this token
  leaked" action (direct mode's `stable_token` with `force_refresh`, which also cuts off everyone else
  who shares the AppID: never used to recover from an error, docs/wechat-protocol.md §0).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from openplatform.wechat.errors import TransientError, WeChatError

logger = logging.getLogger(__name__)

ON_DEMAND_REFRESH_MARGIN = timedelta(seconds=300)
#: A stored token with less than this left is not served in place of a refresh that could not be had:
#: a call started with it would not be sure to finish inside its life (the client's timeout is 10 s).
STALE_TOKEN_FLOOR = timedelta(seconds=30)
#: Waiters poll the row, first after this long, then backing off to `_POLL_MAX` (a refresh takes
#: 50-500 ms against WeChat).
_POLL_FIRST = 0.02
_POLL_MAX = 0.25


def scheduled_refresh_window(*, every: timedelta) -> timedelta:
    """Two periods: a token the job finds just outside the window still has a full period left at its next run."""
    return 2 * every


SCHEDULED_REFRESH_EVERY = timedelta(seconds=settings.TOKEN_REFRESH_EVERY_SECONDS)
SCHEDULED_REFRESH_WINDOW = scheduled_refresh_window(every=SCHEDULED_REFRESH_EVERY)


@dataclass(frozen=True)
class TokenLease:
    """An access token and the generation it belongs to (the generation is safe to record)."""

    token: str
    generation: int

    def __repr__(self) -> str:  # never show the token
        return f"TokenLease(generation={self.generation})"


class TokenRefreshPending(TransientError):
    """Another caller is refreshing this token (or its refresh just failed) and the stored one cannot be
    used: nothing was asked of WeChat by this caller. Retry after `retry_after` seconds.

    A `TransientError`, so every caller that retries transient errors retries this; the upload task
    requeues the upload without spending one of its attempts (uploads/services/process.py).
    """

    def __init__(self, errmsg: str, *, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(None, errmsg)


class TokenSource(Protocol):
    """One token as the single-flight refresh sees it: its row, its issuer, what a refusal means.

    Its rows carry `refresh_lease_owner` and `refresh_lease_until`, which only this module writes.
    Its log lines are its own (their logger and message are what the metrics count).
    """

    #: "component" or "authorizer", for this module's log lines.
    kind: str

    def current(self) -> Any:
        """The row as the caller has it, without a lock; raises if it can have no token."""

    def reload(self) -> Any:
        """The row as stored now, without a lock (a waiter's poll); raises if it can have no token."""

    def lock(self) -> Any:
        """The row, locked until the transaction ends; raises if it can have no token."""

    def seconds_left(self, row: Any) -> float: ...

    def generation(self, row: Any) -> int: ...

    def serve(self, row: Any) -> TokenLease:
        """The lease for the row's token (and the caller's copy of the row brought up to date)."""

    def fetch(self, row: Any, *, invalidate_previous: bool) -> Any:
        """Ask WeChat for a new token (no transaction is open); what `apply` stores.

        `invalidate_previous`: the operator declared the token leaked: an issuer that can cut the old
        token off (direct mode's `stable_token` with `force_refresh`) is told to. Recovery from a token
        error never sets it: a normal call already returns the newest token.
        """

    def apply(self, row: Any, fetched: Any) -> None:
        """Put what `fetch` got on the freshly locked row, stamped; the caller saves it."""

    def refused(self, row: Any, error: WeChatError) -> Exception | None:
        """Under the lock: persist what a final refusal means and return what to raise; None if not final."""

    def record_failure(self, error: WeChatError) -> None:
        """After the transaction: remember why the refresh failed, and log it."""

    def log_refreshed(self, row: Any) -> None: ...

    def log_extra(self) -> dict[str, Any]:
        """Identifies the token in log lines (appids, never the token)."""


def token_get(source: TokenSource, *, margin: timedelta = ON_DEMAND_REFRESH_MARGIN) -> TokenLease:
    """The stored token while more than `margin` is left (no lock); otherwise a single-flight refresh.

    When the refresh cannot be had now (another caller's is still running past the wait, or it failed),
    the stored token is served while it is still good.
    """
    row = source.current()
    if source.seconds_left(row) > margin.total_seconds():
        return source.serve(row)

    def due(row: Any) -> bool:
        return source.seconds_left(row) <= margin.total_seconds()

    return _refresh(source, due=due, usable=lambda row: _still_good(source, row), invalidate_previous=False,
                    stale_after_own_failure=True)


def token_refresh_ahead(source: TokenSource, *, margin: timedelta = SCHEDULED_REFRESH_WINDOW) -> TokenLease:
    """Refresh if less than `margin` is left; otherwise serve the stored token (a repeat is a no-op).

    Its own failed refresh raises (the beat reports it); a refresh another caller is running, past the
    wait, serves the stored token while it is still good.
    """
    return _refresh(
        source,
        due=lambda row: source.seconds_left(row) <= margin.total_seconds(),
        usable=lambda row: _still_good(source, row),
        invalidate_previous=False,
        stale_after_own_failure=False,
    )


def token_refresh_after_failure(
    source: TokenSource, *, failed_generation: int, margin: timedelta = ON_DEMAND_REFRESH_MARGIN
) -> TokenLease:
    """WeChat refused the token of `failed_generation`: replace it if it is still the current one.

    A token another caller has already replaced is served as it is; the second report of the same
    failure is therefore a no-op, and so is a report for an older generation.
    """

    def due(row: Any) -> bool:
        return source.generation(row) == failed_generation or source.seconds_left(row) <= margin.total_seconds()

    def usable(row: Any) -> bool:
        return source.generation(row) != failed_generation and _still_good(source, row)

    return _refresh(source, due=due, usable=usable, invalidate_previous=False, stale_after_own_failure=True)


def token_force_refresh(source: TokenSource, *, invalidate_previous: bool = False) -> TokenLease:
    """A new token whatever is left of the current one (an operator's action); see `fetch`."""
    return _refresh(source, due=lambda row: True, usable=lambda row: False, invalidate_previous=invalidate_previous,
                    stale_after_own_failure=False)


def _still_good(source: TokenSource, row: Any) -> bool:
    return source.seconds_left(row) > STALE_TOKEN_FLOOR.total_seconds()


def wait_seconds() -> float:
    return float(settings.TOKEN_REFRESH_WAIT_SECONDS)


def lease_seconds() -> float:
    return float(settings.TOKEN_REFRESH_LEASE_SECONDS)


# -- the refresh ---------------------------------------------------------------------------------------------


class _LeaseLost(Exception):
    """The holder's lease was gone when it came to store its result (internal)."""

    def __init__(self, row: Any) -> None:
        self.row = row


def _refresh(
    source: TokenSource,
    *,
    due: Callable[[Any], bool],
    usable: Callable[[Any], bool],
    invalidate_previous: bool,
    stale_after_own_failure: bool,
) -> TokenLease:
    """Serve, claim and refresh, or wait for another caller's refresh (see the module's docstring).

    `usable(row)`: the stored token may be served when no new one can be had now. A caller asks WeChat
    at most once.
    """
    deadline = time.monotonic() + wait_seconds()
    watched: tuple[str, int] | None = None  # (owner, generation) of the live lease we are waiting on
    may_claim = True
    delay = _POLL_FIRST
    row: Any = None  # None: look under the lock first
    while True:
        if row is not None:
            if not due(row):
                return source.serve(row)
            if _lease_live(row):
                if watched is None or watched[0] != row.refresh_lease_owner:
                    watched = (row.refresh_lease_owner, source.generation(row))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _give_up(source, row, usable, waited=True)
                time.sleep(min(delay, remaining))
                delay = min(delay * 1.5, _POLL_MAX)
                row = source.reload()
                continue
            if watched is not None and not row.refresh_lease_owner and source.generation(row) == watched[1]:
                # The refresh we waited for released its lease with no new token: it failed (and recorded
                # why). Asking WeChat again at once would only repeat it for every waiter.
                return _give_up(source, row, usable, waited=False)
            if not may_claim:
                return _give_up(source, row, usable, waited=False)
        # Nobody is refreshing, or a lease ran out on its owner (killed or hung): take it.
        try:
            step, row, owner = _claim(source, due, lock_wait=deadline - time.monotonic())
        except OperationalError as exc:
            if not _lock_wait_ended(exc):
                raise
            # The row stayed locked past the wait (never by a refresh, which locks it for milliseconds).
            return _give_up(source, row if row is not None else source.current(), usable, waited=True)
        if step == "serve":
            return source.serve(row)
        if step == "busy":
            continue  # the row shows the other caller's live lease
        may_claim = False
        try:
            return _hold(source, row, owner, invalidate_previous=invalidate_previous, usable=usable,
                         stale_after_own_failure=stale_after_own_failure)
        except _LeaseLost as lost:
            row = lost.row  # someone else is (or was) in charge: serve what they stored, or wait for it


def _lease_live(row: Any) -> bool:
    return bool(row.refresh_lease_owner) and row.refresh_lease_until is not None and (
        row.refresh_lease_until > timezone.now()
    )


def _claim(source: TokenSource, due: Callable[[Any], bool], *, lock_wait: float) -> tuple[str, Any, str]:
    """Under the row lock, in a short transaction: ("serve", row, ""), ("busy", row, "") or ("ours", row, owner)."""
    owner = _new_owner()
    with _short_transaction(lock_wait=lock_wait):
        row = source.lock()
        if not due(row):
            return "serve", row, ""
        if _lease_live(row):
            return "busy", row, ""
        previous = row.refresh_lease_owner
        until = timezone.now() + timedelta(seconds=lease_seconds())
        type(row)._default_manager.filter(pk=row.pk).update(refresh_lease_owner=owner, refresh_lease_until=until)
        row.refresh_lease_owner, row.refresh_lease_until = owner, until
    if previous:
        logger.warning(
            "%s token refresh lease of %s ran out without a result; taking it over", source.kind, previous,
            extra={**source.log_extra(), "lease_owner": owner},
        )
    return "ours", row, owner


def _hold(
    source: TokenSource,
    row: Any,
    owner: str,
    *,
    invalidate_previous: bool,
    usable: Callable[[Any], bool],
    stale_after_own_failure: bool,
) -> TokenLease:
    """We hold the lease: ask WeChat with no transaction open, then store the result under a compare."""
    generation = source.generation(row)
    error: WeChatError | None = None
    fetched: Any = None
    try:
        fetched = source.fetch(row, invalidate_previous=invalidate_previous)
    except WeChatError as exc:
        error = exc
    except BaseException:
        # Not WeChat's answer (a soft time limit, a database error): let the next caller refresh at once.
        _release_quietly(row, owner)
        raise
    final: Exception | None = None
    try:
        # With a new token in hand, worth waiting the whole bound for the row.
        with _short_transaction(lock_wait=wait_seconds()):
            current = source.lock()
            if current.refresh_lease_owner != owner or source.generation(current) != generation:
                lost = current
            else:
                lost = None
                current.refresh_lease_owner, current.refresh_lease_until = "", None
                if error is None:
                    source.apply(current, fetched)
                    current.save()
                    source.log_refreshed(current)
                    return source.serve(current)
                final = source.refused(current, error)  # saves the row (lease released) if final
                if final is None:
                    type(current)._default_manager.filter(pk=current.pk).update(
                        refresh_lease_owner="", refresh_lease_until=None
                    )
    except OperationalError as exc:
        if not _lock_wait_ended(exc):
            raise
        # The result could not be stored; the lease stays ours until it runs out. A rotated refresh token
        # dropped here is recovered by the next refresh through 61023 (docs/wechat-protocol.md §7).
        logger.error("%s token refresh result could not be stored: the row stayed locked", source.kind,
                     extra=source.log_extra())
        raise TokenRefreshPending(
            f"the new {source.kind} token could not be stored (its database row stayed locked)",
            retry_after=wait_seconds(),
        ) from None
    if lost is not None:
        logger.warning(
            "%s token refresh result discarded: its lease was lost (expired and taken over, or newer tokens "
            "were stored meanwhile)", source.kind, extra={**source.log_extra(), "lease_owner": owner},
        )
        raise _LeaseLost(lost)
    if final is not None:
        raise final
    if not isinstance(error, TokenRefreshPending):  # a refresh this one needed (the component token's) is running
        source.record_failure(error)
    if stale_after_own_failure and usable(current):
        # The stored token still works: even if the failed call did issue a new one (a timeout after WeChat
        # answered), WeChat keeps the previous token for about 5 minutes (docs/wechat-protocol.md §4).
        return source.serve(current)
    raise error


def _give_up(source: TokenSource, row: Any, usable: Callable[[Any], bool], *, waited: bool) -> TokenLease:
    """No new token now: the stored one if it is still good, else a retryable `TokenRefreshPending`."""
    if waited:
        logger.warning("%s token refresh by another caller still running after %.1f s", source.kind, wait_seconds(),
                       extra={**source.log_extra(), "lease_owner": row.refresh_lease_owner})
    if usable(row):
        return source.serve(row)
    if waited:
        raise TokenRefreshPending(
            f"another worker is refreshing the {source.kind} access token (still running after "
            f"{wait_seconds():g} s); retry shortly",
            retry_after=wait_seconds(),
        )
    raise TokenRefreshPending(
        f"another worker's refresh of the {source.kind} access token failed just now; retry shortly",
        retry_after=wait_seconds(),
    )


def _release_quietly(row: Any, owner: str) -> None:
    with contextlib.suppress(Exception):
        type(row)._default_manager.filter(pk=row.pk, refresh_lease_owner=owner).update(
            refresh_lease_owner="", refresh_lease_until=None
        )


@contextlib.contextmanager
def _short_transaction(*, lock_wait: float) -> Iterator[None]:
    """A transaction that waits for a row lock at most `lock_wait` seconds (PostgreSQL's lock_timeout).

    Inside a caller's transaction it is a savepoint and the caller's settings stand (SET LOCAL would
    outlive it). SQLite: an IMMEDIATE transaction, which waits for the write lock up to its busy timeout.
    """
    bounded = connection.vendor == "postgresql" and not connection.in_atomic_block
    with transaction.atomic():
        if bounded:
            with connection.cursor() as cursor:
                # At least 50 ms: lock_timeout 0 would mean "wait forever".
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{max(50, int(lock_wait * 1000))}ms"])
        yield


def _lock_wait_ended(exc: OperationalError) -> bool:
    """PostgreSQL's lock_timeout (SQLSTATE 55P03) or SQLite's busy timeout."""
    return getattr(exc.__cause__, "sqlstate", None) == "55P03" or "database is locked" in str(exc)


def _new_owner() -> str:
    """Who holds a lease, for operators (host and pid) and unique per claim."""
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{secrets.token_hex(6)}"
