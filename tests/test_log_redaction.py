"""No authorization code, state or token in any log line: gunicorn's and runserver's access logs, and
tracebacks in both log formats (issue #11, point 11)."""

from __future__ import annotations

import io
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings as django_settings

from tests.test_deploy import DEPLOY, HOST, REPO, _free_port, production_env

AUTH_CODE = "queryauthcode@@@SECRETAUTHCODE42"
STATE = "SIGNEDSTATE.abc123:def456"
PRE_AUTH_CODE = "preauthcode@@@SECRETPREAUTH"
REDIRECT_QUERY = {"state": STATE, "auth_code": AUTH_CODE, "expires_in": "3600"}
REFERER = f"https://mp.weixin.qq.com/cgi-bin/componentloginpage?component_appid=wx1&pre_auth_code={PRE_AUTH_CODE}"
SECRETS = (AUTH_CODE, "SECRETAUTHCODE42", STATE, "SIGNEDSTATE", PRE_AUTH_CODE, "SECRETPREAUTH")


def _wait_for(url: str, proc: subprocess.Popen, *, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited before answering"
        try:
            requests.get(url, headers=headers, timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within 30 s")


class _Output:
    """The server's output, read as it comes (the access line is written after the response is sent)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        self._reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text() and time.monotonic() < deadline:
            time.sleep(0.05)


def _stop(proc: subprocess.Popen, output: _Output) -> str:
    output.wait_for('/wechat/component/authorized/?')
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    output._reader.join(timeout=5)
    return output.text()


def _assert_logged_without_secrets(output: str) -> None:
    assert "/wechat/component/authorized/" in output, f"no access line for the redirect:\n{output[-3000:]}"
    assert "auth_code=[redacted]" in output and "state=[redacted]" in output
    for secret in SECRETS:
        assert secret not in output, f"{secret!r} is in the access log"


def test_gunicorn_access_log_of_the_procfile_command_has_no_code_or_state(tmp_path):
    procs = dict(
        line.split(":", 1) for line in (DEPLOY / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    )
    cmd = shlex.split(procs["web"].replace("${PORT:-8000}", "8000"))
    port = _free_port()
    cmd[cmd.index("--bind") + 1] = f"127.0.0.1:{port}"
    cmd[0] = str(Path(sys.executable).parent / "gunicorn")
    env = production_env(tmp_path, WEB_CONCURRENCY="1", LOG_JSON="")
    assert manage_migrate(env).returncode == 0
    server = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    output = _Output(server)
    headers = {"Host": HOST, "X-Forwarded-Proto": "https"}
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server, headers=headers)
        answer = requests.get(
            f"http://127.0.0.1:{port}/wechat/component/authorized/", params=REDIRECT_QUERY,
            headers={**headers, "Referer": REFERER}, timeout=10,
        )
        assert answer.status_code == 400  # a state we never signed
    finally:
        output = _stop(server, output)
    _assert_logged_without_secrets(output)


def manage_migrate(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120,
    )


def test_runserver_access_log_has_no_code_or_state(tmp_path):
    env = production_env(tmp_path, DEBUG="1", LOG_JSON="", ALLOWED_HOSTS="127.0.0.1,localhost")
    assert manage_migrate(env).returncode == 0
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output = _Output(server)
    try:
        _wait_for(f"http://127.0.0.1:{port}/healthz", server, headers={})
        requests.get(
            f"http://127.0.0.1:{port}/wechat/component/authorized/", params=REDIRECT_QUERY,
            headers={"Referer": REFERER}, timeout=10,
        )
    finally:
        output = _stop(server, output)
    _assert_logged_without_secrets(output)


@pytest.mark.parametrize("formatter_name", ["plain", "json"])
def test_a_traceback_quoting_a_token_is_redacted_in_every_format(formatter_name):
    from logging.config import dictConfig

    config = django_settings.LOGGING
    stream = io.StringIO()
    dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {formatter_name: config["formatters"][formatter_name]},
        "handlers": {"probe": {"class": "logging.StreamHandler", "stream": stream, "formatter": formatter_name}},
        "loggers": {"redaction.probe": {"handlers": ["probe"], "level": "INFO", "propagate": False}},
    })
    logger = logging.getLogger("redaction.probe")
    try:
        raise ValueError(f"GET /cgi-bin/x?access_token=TOKENSECRET99&auth_code={AUTH_CODE} failed")
    except ValueError:
        logger.exception("a call failed")
    output = stream.getvalue()
    assert "Traceback" in output and "ValueError" in output
    assert "access_token=[redacted]" in output
    assert "TOKENSECRET99" not in output and "SECRETAUTHCODE42" not in output


def test_decrypted_push_xml_is_redacted():
    from openplatform.logging import redact

    line = redact(
        "<xml><AppId>wx1</AppId><AuthorizationCode><![CDATA[queryauthcode@@@XYZ]]></AuthorizationCode>"
        "<ComponentVerifyTicket>ticket@@@TICKETVALUE</ComponentVerifyTicket></xml> Bearer METRICSTOKEN"
    )
    assert "XYZ" not in line and "TICKETVALUE" not in line and "METRICSTOKEN" not in line
    assert "<AppId>wx1</AppId>" in line
