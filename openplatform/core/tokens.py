"""Token leases and refresh margins shared by the component and authorizer token services.

Why these margins (docs/wechat-protocol.md §4, §7, §12): tokens live 7200 s and the old token keeps working
for about 5 minutes after a refresh. A token is refreshed on use when less than
`ON_DEMAND_REFRESH_MARGIN` (300 s, the SDKs' consensus of 200-300 s) is left: a call started with it
finishes well inside its life. The beat job runs every `SCHEDULED_REFRESH_EVERY`
(settings.TOKEN_REFRESH_EVERY_SECONDS, 240 s by default; its schedule is written from the same setting)
and refreshes tokens with less than `SCHEDULED_REFRESH_WINDOW`, two periods, left: a token is replaced
with one to two periods of life remaining, never later. With the default, when 240-480 s remain: each
token serves at least 6720 s, i.e. at most 12.9 refreshes a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings

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
