"""A small Python client of the simulator's control API (/_sim/), one method per route."""

from __future__ import annotations

from typing import Any

import requests

DEFAULT_TIMEOUT = 30.0  # pushes made by a control call wait for the receiver


class SimulatorControlError(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        super().__init__(f"simulator control API answered {status_code}: {message}")


class SimulatorControl:
    """`token`: the simulator's control token (SIMULATOR_CONTROL_TOKEN), sent as a bearer token; None when
    the simulator runs without one (the local run)."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT, token: str | None = None) -> None:
        self.url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def close(self) -> None:
        self._session.close()

    def _request(
        self,
        method: str,
        route: str,
        payload: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        response = self._session.request(
            method,
            f"{self.url}/_sim/{route}",
            json=payload if method == "POST" else None,
            params={k: v for k, v in (params or {}).items() if v is not None},
            timeout=self.timeout,
        )
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SimulatorControlError(response.status_code, message)
        return response.json()

    def _post(self, route: str, payload: dict[str, Any] | None = None) -> Any:
        return self._request("POST", route, payload or {})

    # -- set-up -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        self._post("reset")

    def configure(self, **config: Any) -> dict[str, Any]:
        """Partial update of component_token_ttl, authorizer_token_ttl, token_grace_seconds,
        rotate_refresh_tokens, daily_limit (and pre_auth_code_ttl, auth_code_ttl, ticket_ttl,
        clear_quota_monthly_limit, stable_token_renew_seconds, stable_force_daily_limit,
        stable_force_min_interval); returns the whole configuration."""
        return self._post("config", config)

    def register_component(
        self,
        component_appid: str,
        component_appsecret: str,
        token: str,
        encoding_aes_key: str,
        events_url: str | None = None,
        messages_url: str | None = None,
    ) -> dict[str, Any]:
        """``messages_url`` is the per-authorizer message URL with "$APPID$" in it, as on the Open Platform."""
        return self._post(
            "components",
            {
                "component_appid": component_appid,
                "component_appsecret": component_appsecret,
                "token": token,
                "encoding_aes_key": encoding_aes_key,
                "events_url": events_url,
                "messages_url": messages_url,
            },
        )

    def withhold_permission_sets(self, component_appid: str, set_ids: list[int]) -> list[int]:
        """The platform does not hold these sets on the Open Platform console (replaces the list; [] = none):
        they are never offered or granted, and uploadimg then answers 61007."""
        return self._post(f"components/{component_appid}/withheld_sets", {"set_ids": set_ids})["withheld_sets"]

    def set_account_lacks_api(
        self, appid: str, path: str = "/cgi-bin/media/uploadimg", lacks: bool = True
    ) -> dict[str, Any]:
        """The account itself lacks the API (e.g. unverified): calls to ``path`` answer 48001."""
        return self._post(f"accounts/{appid}/lacks_api", {"path": path, "lacks": lacks})

    def register_direct_account(self, appid: str, secret: str, func_info: list[int]) -> dict[str, Any]:
        return self._post("direct_accounts", {"appid": appid, "secret": secret, "func_info": func_info})

    # -- tickets ------------------------------------------------------------------------------------------

    def push_ticket(self, component_appid: str, url: str | None = None) -> dict[str, Any]:
        """Issue a ticket and push it; ``{ticket, status_code, response_text, error}``."""
        return self._post("tickets/push", {"component_appid": component_appid, "url": url})

    def issue_ticket(self, component_appid: str) -> str:
        return self._post("tickets/issue", {"component_appid": component_appid})["ticket"]

    # -- authorizers --------------------------------------------------------------------------------------

    def authorize(
        self,
        component_appid: str,
        authorizer_appid: str | None = None,
        func_info: list[int] | None = None,
        nick_name: str | None = None,
        account_type: str = "official_account",
        push_event: bool = False,
        principal_name: str | None = None,
    ) -> dict[str, Any]:
        """As if the merchant authorized: ``{authorizer_appid, auth_code, refresh_token, info_type, event}``.

        ``func_info`` defaults to [1, 11] for an Official Account and [18] for a Mini Program."""
        payload: dict[str, Any] = {
            "component_appid": component_appid,
            "account_type": account_type,
            "push_event": push_event,
        }
        optional = {
            "authorizer_appid": authorizer_appid,
            "func_info": func_info,
            "nick_name": nick_name,
            "principal_name": principal_name,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        return self._post("authorizers", payload)

    def reauthorize(
        self,
        appid: str,
        func_info: list[int] | None = None,
        push_event: bool = False,
        component_appid: str | None = None,
    ) -> dict[str, Any]:
        return self._post(
            f"authorizers/{appid}/reauthorize",
            {"func_info": func_info, "push_event": push_event, "component_appid": component_appid},
        )

    def revoke(
        self, appid: str, push_event: bool = False, component_appid: str | None = None
    ) -> dict[str, Any]:
        return self._post(
            f"authorizers/{appid}/revoke", {"push_event": push_event, "component_appid": component_appid}
        )

    def invalidate_refresh_token(self, appid: str, component_appid: str | None = None) -> dict[str, Any]:
        return self._post(
            f"authorizers/{appid}/invalidate_refresh_token", {"component_appid": component_appid}
        )

    def authorizer(self, appid: str, component_appid: str | None = None) -> dict[str, Any]:
        return self._request("GET", f"authorizers/{appid}", params={"component_appid": component_appid})

    # -- messages on behalf of authorizers, the release check ---------------------------------------------

    def send_message(
        self,
        appid: str,
        content: str,
        from_user: str | None = None,
        url: str | None = None,
        component_appid: str | None = None,
    ) -> dict[str, Any]:
        """A fan's encrypted text message to the authorizer's message URL: ``{url, status_code,
        response_text, elapsed_ms, error, reply (decrypted passive reply fields or None), reply_error}``."""
        payload = {"content": content, "from_user": from_user, "url": url, "component_appid": component_appid}
        return self._post(f"authorizers/{appid}/messages", payload)

    def run_release_test(
        self,
        component_appid: str,
        account_type: str = "official_account",
        url: str | None = None,
        wait: float = 10.0,
    ) -> dict[str, Any]:
        """WeChat's full-network release check: ``{passed, steps: [{name, passed, detail}], ...}``."""
        payload = {"component_appid": component_appid, "account_type": account_type, "url": url, "wait": wait}
        return self._post("release_test", payload)

    def messages(self) -> list[dict[str, Any]]:
        return self._request("GET", "messages")

    def custom_messages(self) -> list[dict[str, Any]]:
        """Every message/custom/send received: ``{appid, touser, msgtype, content, time}``."""
        return self._request("GET", "custom_messages")

    # -- failures, latency, time --------------------------------------------------------------------------

    def invalidate_tokens(self, appid: str | None = None, errcode: int = 40001) -> int:
        return self._post("tokens/invalidate", {"appid": appid, "errcode": errcode})["invalidated"]

    def inject_fault(self, path: str, kind: str, count: int = 1, **params: Any) -> dict[str, Any]:
        """The next ``count`` calls to ``path`` ("*": any) fail: kind "errcode" (errcode=, default -1;
        errmsg= for WeChat's text, "{ip}" in it is the caller's address), "http_status" (status=, default
        500), "delay" (seconds=, then a normal answer), "not_json"."""
        return self._post("faults", {"path": path, "kind": kind, "count": count, **params})

    def set_failure_rate(self, path: str, rate: float, kinds: list[Any], seed: int = 0) -> dict[str, Any]:
        """A seeded random ``rate`` of calls fail with one of ``kinds`` (names or fault objects); 0 stops."""
        return self._post("faults", {"path": path, "rate": rate, "kinds": kinds, "seed": seed})

    def clear_faults(self) -> dict[str, Any]:
        return self._post("faults/clear")

    def set_latency(self, path: str, seconds: float) -> dict[str, float]:
        return self._post("latency", {"path": path, "seconds": seconds})

    def advance_clock(self, seconds: float) -> dict[str, float]:
        return self._post("clock", {"advance_seconds": seconds})

    # -- records ------------------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return self._request("GET", "counters")

    def calls(self, path: str | None = None) -> list[dict[str, Any]]:
        return self._request("GET", "calls", params={"path": path})

    def uploads(self) -> list[dict[str, Any]]:
        return self._request("GET", "uploads")

    def events(self) -> list[dict[str, Any]]:
        """Every push delivered so far (ticket and authorization events) and how the receiver answered."""
        return self._request("GET", "events")

    def state(self) -> dict[str, Any]:
        return self._request("GET", "state")
