"""Token leases, refresh margins, and the one single-flight refresh both kinds of token use.

Why these margins (docs/wechat-protocol.md §4, §7, §12): tokens live 7200 s and the old token keeps working
for about 5 minutes after a refresh. A token is refreshed on use when less than
`ON_DEMAND_REFRESH_MARGIN` (300 s, the SDKs' consensus of 200-300 s) is left: a call started with it
finishes well inside its life. The beat job runs every `SCHEDULED_REFRESH_EVERY`
(settings.TOKEN_REFRESH_EVERY_SECONDS, 240 s by default; its schedule is written from the same setting)
and refreshes tokens with less than `SCHEDULED_REFRESH_WINDOW`, two periods, left: a token is replaced
with one to two periods of life remaining, never later. With the default, when 240-480 s remain: each
token serves at least 6720 s, i.e. at most 12.9 refreshes a day.

Single flight (docs/architecture.md, tokens): a refresh runs under a lock on the token's row
(`SELECT ... FOR NO KEY UPDATE` on PostgreSQL, which does not block inserts of rows that reference
it; an IMMEDIATE transaction on SQLite). The holder re-reads the row, decides whether a new token is
still needed, asks WeChat and saves the token in the same transaction; waiters then re-read, find it
fresh and never call WeChat, so N concurrent callers cause one call. A failure is recorded after the
transaction, for the admin and /readyz.

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

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction

from openplatform.wechat.errors import WeChatError

ON_DEMAND_REFRESH_MARGIN = timedelta(seconds=300)


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


class TokenSource(Protocol):
    """One token as the single-flight refresh sees it: its row, its issuer, what a refusal means.

    Its log lines are its own (their logger and message are what the metrics count).
    """

    def current(self) -> Any:
        """The row as the caller has it, without a lock; raises if it can have no token."""

    def lock(self) -> Any:
        """The row, locked until the transaction ends; raises if it can have no token."""

    def seconds_left(self, row: Any) -> float: ...

    def generation(self, row: Any) -> int: ...

    def serve(self, row: Any) -> TokenLease:
        """The lease for the row's token (and the caller's copy of the row brought up to date)."""

    def renew(self, row: Any, *, invalidate_previous: bool) -> None:
        """Ask WeChat for a new token and put it on the locked row, stamped; not saved.

        `invalidate_previous`: the operator declared the token leaked: an issuer that can cut the old
        token off (direct mode's `stable_token` with `force_refresh`) is told to. Recovery from a token
        error never sets it: a normal call already returns the newest token.
        """

    def refused(self, row: Any, error: WeChatError) -> Exception | None:
        """Under the lock: persist what a final refusal means and return what to raise; None if not final."""

    def record_failure(self, error: WeChatError) -> None:
        """After the transaction: remember why the refresh failed, and log it."""

    def log_refreshed(self, row: Any) -> None: ...


def token_get(source: TokenSource, *, margin: timedelta = ON_DEMAND_REFRESH_MARGIN) -> TokenLease:
    """The stored token while more than `margin` is left (no lock); otherwise a single-flight refresh."""
    row = source.current()
    if source.seconds_left(row) > margin.total_seconds():
        return source.serve(row)
    return token_refresh_ahead(source, margin=margin)


def token_refresh_ahead(source: TokenSource, *, margin: timedelta = SCHEDULED_REFRESH_WINDOW) -> TokenLease:
    """Refresh if less than `margin` is left; otherwise serve the stored token (a repeat is a no-op)."""
    return _refresh(source, due=lambda row: source.seconds_left(row) <= margin.total_seconds(), invalidate_previous=False)


def token_refresh_after_failure(
    source: TokenSource, *, failed_generation: int, margin: timedelta = ON_DEMAND_REFRESH_MARGIN
) -> TokenLease:
    """WeChat refused the token of `failed_generation`: replace it if it is still the current one.

    A token another caller has already replaced is served as it is; the second report of the same
    failure is therefore a no-op.
    """

    def due(row: Any) -> bool:
        return source.generation(row) == failed_generation or source.seconds_left(row) <= margin.total_seconds()

    return _refresh(source, due=due, invalidate_previous=False)


def token_force_refresh(source: TokenSource, *, invalidate_previous: bool = False) -> TokenLease:
    """A new token whatever is left of the current one (an operator's action); see `renew`."""
    return _refresh(source, due=lambda row: True, invalidate_previous=invalidate_previous)


def _refresh(source: TokenSource, *, due: Callable[[Any], bool], invalidate_previous: bool) -> TokenLease:
    with transaction.atomic():
        row = source.lock()
        if not due(row):
            return source.serve(row)
        try:
            source.renew(row, invalidate_previous=invalidate_previous)
        except WeChatError as exc:
            error = exc
            final = source.refused(row, exc)
        else:
            row.save()
            source.log_refreshed(row)
            return source.serve(row)
    if final is not None:
        raise final
    # After the transaction (it saved nothing): the failure is remembered for the admin and /readyz.
    source.record_failure(error)
    raise error
