"""Rules of /cgi-bin/stable_token: an account's own token from its AppID and AppSecret (direct mode).

Source: getStableAccessToken,
https://developers.weixin.qq.com/doc/service/api/base/api_getstableaccesstoken and the mini-game page
https://developers.weixin.qq.com/minigame/dev/api-backend/open-api/access-token/auth.getStableAccessToken.html:

- normal mode returns the current token while it is valid and renews it only in its last 5 minutes;
  the renewed token and the previous one both work during that overlap, so ``expires_in >= 300``;
- ``force_refresh=true`` invalidates the previous token at once and returns a new one; it is meant for a
  leaked token, limited to 20 a day, and a forced call less than 30 s after the last one "does not
  refresh" (it answers the current token). The errcode beyond 20 a day is not documented: the simulator
  answers 45009 (docs/wechat-notes.md, item 2).
"""

from __future__ import annotations

from typing import Any

from .state import AccessToken, ApiError, Call, DirectAccount, SimulatorState

#: What a token answers once a forced refresh has replaced it ("access_token is invalid or not latest").
SUPERSEDED_ERRCODE = 40001


def _account(state: SimulatorState, body: dict[str, Any]) -> DirectAccount:
    if body.get("grant_type") != "client_credential":
        raise ApiError(40002)
    appid = body.get("appid")
    if not isinstance(appid, str) or not appid:
        raise ApiError(41002)
    account = state.direct_accounts.get(appid)
    if account is None:
        raise ApiError(40013)
    secret = body.get("secret")
    if not isinstance(secret, str) or not secret:
        raise ApiError(41004)
    if secret != account.secret:
        raise ApiError(40125)
    return account


def _live(state: SimulatorState, account: DirectAccount) -> AccessToken | None:
    token = state.tokens.get(account.access_token or "")
    if token is None or token.forced_errcode is not None or token.expires_at <= state.now():
        return None
    return token


def _issue(state: SimulatorState, account: DirectAccount) -> AccessToken:
    # previous=None: a renewed stable token does not cut the old one short, it keeps its remaining time.
    token = state.issue_token(
        kind="direct",
        owner=account.appid,
        component_appid=None,
        ttl=state.config.authorizer_token_ttl,
        previous=None,
    )
    account.access_token = token.value
    return token


def _normal(state: SimulatorState, account: DirectAccount) -> AccessToken:
    current = _live(state, account)
    if current is not None and current.expires_at - state.now() > state.config.stable_token_renew_seconds:
        return current
    # None, expired, invalidated by someone else's forced refresh, or in its last minutes: a new one.
    return _issue(state, account)


def _forced(state: SimulatorState, account: DirectAccount) -> AccessToken:
    now, config = state.now(), state.config
    if account.forced_day != state.day():
        account.forced_day, account.forced_count = state.day(), 0
    current = _live(state, account)
    if (
        current is not None
        and account.last_forced_at is not None
        and now - account.last_forced_at < config.stable_force_min_interval
    ):
        return current  # "连续使用该模式时,请保证调用时间隔至少为30s,否则不会刷新"
    if account.forced_count >= config.stable_force_daily_limit:
        raise ApiError(45009, "reach max api daily quota limit (force_refresh is limited to 20 a day)")
    for token in state.tokens.values():
        if token.kind == "direct" and token.owner == account.appid and token.expires_at > now:
            token.forced_errcode = SUPERSEDED_ERRCODE
    account.forced_count += 1
    account.last_forced_at = now
    return _issue(state, account)


def stable_token(state: SimulatorState, call: Call) -> dict[str, Any]:
    account = _account(state, call.body)
    state.check_quota(account.appid, call.path)
    now = state.now()  # before a new token is issued, so that a fresh one answers the full 7200
    force = call.body.get("force_refresh") is True
    token = _forced(state, account) if force else _normal(state, account)
    state.meter(account.appid, call.path)
    return {"access_token": token.value, "expires_in": max(int(token.expires_at - now), 0)}
