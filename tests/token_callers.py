"""One token caller (or one upload run), as tests/test_token_failures.py races them: in a thread of the test
process, or in an OS process of its own (`python -m tests.token_callers ACTION PK ARG`).

A process says "ready" once Django is set up, waits for a line on stdin, runs, and prints one JSON
line: what it got (a hash of the token, never the token), or the error's class, and when it started and
ended (CLOCK_MONOTONIC is system-wide on Linux, so the times compare with the test's threads).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def call(action: str, pk: int, arg: str = "") -> dict[str, Any]:
    """Run one caller; never raises a WeChat or token error (it is reported in the result)."""
    from openplatform.component.token import component_access_token_refresh_after_failure
    from openplatform.wechat.errors import WeChatError
    from tenants.models import Authorizer
    from tenants.services.tokens import (
        authorizer_access_token_get,
        authorizer_access_token_refresh_after_failure,
    )
    from uploads.services.process import upload_process

    started = time.monotonic()
    try:
        if action == "upload":
            outcome = upload_process(upload_id=arg)
            result: dict[str, Any] = {"status": outcome.status, "retry_in": outcome.retry_in}
        else:
            if action == "get":
                lease = authorizer_access_token_get(authorizer=Authorizer.objects.get(pk=pk))
            elif action == "after_failure":
                lease = authorizer_access_token_refresh_after_failure(
                    authorizer=Authorizer.objects.get(pk=pk), failed_generation=int(arg)
                )
            elif action == "component_after_failure":
                lease = component_access_token_refresh_after_failure(failed_generation=int(arg))
            else:
                raise ValueError(f"unknown action {action!r}")
            result = {"digest": sha(lease.token), "generation": lease.generation}
    except WeChatError as exc:
        result = {"error": type(exc).__name__, "retryable": exc.retryable, "message": str(exc)}
    result.update(started=started, ended=time.monotonic())
    return result


def main(argv: list[str]) -> None:
    import django

    django.setup()
    action, pk, arg = argv[0], int(argv[1]), (argv[2] if len(argv) > 2 else "")
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(call(action, pk, arg)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
