"""`make run`, the way a newcomer meets it (issue #5): scripts/run.sh brings up the simulator, web,
worker, beat and the seeded demo; the curl commands it prints work when pasted; the sample upload
succeeds; Ctrl-C, a SIGTERM to `make run` or a closed terminal stops every process within 10 s.

It runs on the embedded defaults (SQLite, the filesystem broker) in a temporary VAR_DIR, on free ports,
so a developer's var/ and a running `make run` are left alone. About 15 s per start.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
HONCHO = REPO / ".venv" / "bin" / "honcho"
MARKER = "LOCAL_STACK_TEST_RUN"
BANNER = "demo ready"
RULE = "=" * 76
STOP_WITHIN = 10  # seconds, from the signal to the last process gone

pytestmark = pytest.mark.skipif(
    not HONCHO.exists(), reason=f"needs {HONCHO.relative_to(REPO)} (`make install` puts it there)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return 0


def _run_processes(marker: str) -> set[int]:
    """Every living process started from the run: each inherits the test's marker in its environment,
    which /proc shows whoever its parent is now (an orphan is found as well as a child)."""
    needle = f"{MARKER}={marker}".encode()
    found = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            entries = environ.read_bytes().split(b"\0")
        except OSError:
            continue
        pid = int(environ.parent.name)
        if needle in entries and _alive(pid):
            found.add(pid)
    return found


def _kill_everything(marker: str) -> None:
    for pid in _run_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _start(tmp_path: Path, command: list[str]) -> tuple[subprocess.Popen, Path, str, int]:
    """`command` (scripts/run.sh or `make run`) on free ports, in a session of its own as a terminal
    would run it: (process, its log, the marker its processes carry, the web port)."""
    web_port, simulator_port = _free_port(), _free_port()
    marker = uuid.uuid4().hex
    env = {
        # A clean environment: nothing of the test run's (its DATABASE_URL, DJANGO_SETTINGS_MODULE, ...).
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "VAR_DIR": str(tmp_path / "var"),
        "WEB_PORT": str(web_port),
        "SIMULATOR_PORT": str(simulator_port),
        MARKER: marker,
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_as_from_a_terminal,
        )
    return proc, log, marker, web_port


def _as_from_a_terminal() -> None:
    """In the child, before exec: the signal dispositions and mask a shell in a terminal starts with.

    An ignored signal stays ignored across exec, and bash cannot trap a signal that was ignored when it
    started; a blocked one stays blocked. Whatever an earlier test left in this process (a library that
    ignores or blocks SIGHUP, SIGINT or SIGTERM) must not decide whether run.sh can be stopped."""
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _assert_everything_stops(proc: subprocess.Popen, log: Path, marker: str, web_port: int, signalled: float):
    """The run has exited and left no process behind, STOP_WITHIN seconds after `signalled` at most."""
    deadline = signalled + STOP_WITHIN
    while (proc.poll() is None or _run_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {pid: _cmdline(pid) for pid in _run_processes(marker)}
    tail = log.read_text(errors="replace")[-3000:]
    assert proc.poll() is not None, (
        f"run.sh still running {STOP_WITHIN} s after the signal; its processes: {left}; in this test process "
        f"SIGHUP is {signal.getsignal(signal.SIGHUP)}, blocked: {signal.pthread_sigmask(signal.SIG_BLOCK, [])}"
        f"\n{tail}"
    )
    assert not left, f"still running {STOP_WITHIN} s after the signal: {left}\n{tail}"
    with socket.socket() as s:  # the web port is free again (no listener; TIME_WAIT is fine)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", web_port))


def _wait_for_banner(proc: subprocess.Popen, log: Path, timeout: float) -> list[str]:
    """The demo's printout (honcho's prefixes removed), once its closing rule has been printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if BANNER in text:
            lines = [line.split("| ", 1)[-1] for line in text.split(BANNER, 1)[1].splitlines()[1:]]
            if RULE in lines:
                return lines[: lines.index(RULE)]
        if proc.poll() is not None:
            pytest.fail(f"scripts/run.sh exited with {proc.returncode} before the demo was ready:\n{text[-4000:]}")
        time.sleep(0.2)
    pytest.fail(f"no '{BANNER}' within {timeout:.0f} s:\n{log.read_text(errors='replace')[-4000:]}")


def _run_pasted(command: str) -> str:
    """Run a printed command as a person pasting it would: in a shell when curl is there."""
    if shutil.which("curl"):
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, f"{command!r} failed: {done.stderr}"
        return done.stdout
    # No curl: do what it would do, from its own arguments.
    args = shlex.split(command)
    assert args[0] == "curl", command
    headers, files, data, url = {}, {}, {}, None
    it = iter(args[1:])
    for arg in it:
        if arg == "-s":
            continue
        if arg == "-H":
            name, _, value = next(it).partition(": ")
            headers[name] = value
        elif arg == "-F":
            name, _, value = next(it).partition("=")
            if value.startswith("@"):
                path = Path(value[1:])
                files[name] = (path.name, path.read_bytes())
            else:
                data[name] = value
        else:
            assert not arg.startswith("-") and url is None, f"unexpected curl argument {arg!r} in {command!r}"
            url = arg
    if files or data:
        return requests.post(url, headers=headers, files=files, data=data, timeout=30).text
    return requests.get(url, headers=headers, timeout=30).text


def test_make_run_serves_the_demo_its_commands_work_and_ctrl_c_stops_everything(tmp_path):
    proc, log, marker, web_port = _start(tmp_path, ["bash", "scripts/run.sh"])
    try:
        printout = _wait_for_banner(proc, log, timeout=60)
        assert len(_run_processes(marker)) >= 6  # run.sh, honcho, simulator, web, worker, beat, demo, ...

        commands = [line.strip() for line in printout if line.strip().startswith("curl ")]
        upload_cmd = next(c for c in commands if "-F " in c)
        list_cmd = next(c for c in commands if c.endswith("/api/v1/uploads/") and "-F " not in c)
        accounts_cmd = next(c for c in commands if c.endswith("/api/v1/authorizers/"))
        assert str(tmp_path / "var" / "sample.png") in upload_cmd
        assert f"http://127.0.0.1:{web_port}/" in upload_cmd

        accepted = json.loads(_run_pasted(upload_cmd))
        assert accepted["status"] in {"queued", "uploading", "succeeded"}, accepted

        deadline = time.monotonic() + 30
        while True:
            newest = json.loads(_run_pasted(list_cmd))["results"][0]
            assert newest["id"] == accepted["id"]
            if newest["status"] not in {"queued", "uploading"} or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert newest["status"] == "succeeded", newest
        assert newest["url"].startswith("http"), newest

        accounts = json.loads(_run_pasted(accounts_cmd))["results"]
        assert [a["appid"] for a in accounts] == [accepted["authorizer_appid"]]
        assert accounts[0]["can_upload_images"] is True

        # Ctrl-C: the terminal sends SIGINT to the foreground process group (run.sh and honcho).
        os.killpg(proc.pid, signal.SIGINT)
        _assert_everything_stops(proc, log, marker, web_port, signalled=time.monotonic())
        assert proc.returncode == 130
    finally:
        _kill_everything(marker)
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    ("command", "how", "returncode"),
    [
        # A process manager or an IDE's stop button: SIGTERM to `make run` alone (make passes it on).
        (["make", "-o", "install", "run"], "sigterm", -signal.SIGTERM),
        # The terminal closed: SIGHUP to the foreground group, which kills honcho at once.
        (["bash", "scripts/run.sh"], "sighup", 129),
        # honcho itself killed (out of memory, a supervisor's SIGKILL): its processes are orphans.
        (["bash", "scripts/run.sh"], "honcho-killed", 137),
    ],
    ids=["sigterm-to-make", "terminal-closed", "honcho-killed"],
)
def test_make_run_leaves_no_process_behind(tmp_path, command, how, returncode):
    proc, log, marker, web_port = _start(tmp_path, command)
    try:
        _wait_for_banner(proc, log, timeout=60)
        # Both workers are up: uploads on threads (one process), the jobs worker on prefork with its pool
        # child (the pool is what once outlived the run).
        workers = [pid for pid in _run_processes(marker) if " worker " in _cmdline(pid)]
        assert len(workers) >= 3, workers
        assert {"threads", "prefork"} <= {_cmdline(pid).split(" --pool ")[-1].split()[0] for pid in workers}

        signalled = time.monotonic()
        if how == "sigterm":
            os.kill(proc.pid, signal.SIGTERM)
        elif how == "sighup":
            os.killpg(proc.pid, signal.SIGHUP)
        else:
            # honcho's own children (one per process, forked) have its command line: the one run.sh started.
            honcho = [pid for pid in _run_processes(marker) if "honcho" in _cmdline(pid) and _ppid(pid) == proc.pid]
            assert len(honcho) == 1, honcho
            os.kill(honcho[0], signal.SIGKILL)
        _assert_everything_stops(proc, log, marker, web_port, signalled)
        assert proc.returncode == returncode
    finally:
        _kill_everything(marker)
        proc.wait(timeout=10)
