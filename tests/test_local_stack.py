"""`make run`, the way a newcomer meets it (issue #5): scripts/run.sh brings up the simulator, web,
worker, beat and the seeded demo; the curl commands it prints work when pasted; the sample upload
succeeds; Ctrl-C stops every process.

It runs on the embedded defaults (SQLite, the filesystem broker) in a temporary VAR_DIR, on free ports,
so a developer's var/ and a running `make run` are left alone. About 15 s.
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
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
HONCHO = REPO / ".venv" / "bin" / "honcho"
BANNER = "demo ready"
RULE = "=" * 76

pytestmark = pytest.mark.skipif(
    not HONCHO.exists(), reason=f"needs {HONCHO.relative_to(REPO)} (`make install` puts it there)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(root: int) -> set[int]:
    """Every living process below `root` (honcho starts each child in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for its parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in {"Z", "X"}


def _kill_everything(root: int, pids: set[int]) -> None:
    for pid in {root} | pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


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
    web_port, simulator_port = _free_port(), _free_port()
    env = {
        # A clean environment: nothing of the test run's (its DATABASE_URL, DJANGO_SETTINGS_MODULE, ...).
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "VAR_DIR": str(tmp_path / "var"),
        "WEB_PORT": str(web_port),
        "SIMULATOR_PORT": str(simulator_port),
    }
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "scripts/run.sh"], cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    processes: set[int] = set()
    try:
        printout = _wait_for_banner(proc, log, timeout=60)
        processes = _descendants(proc.pid)
        assert len(processes) >= 5  # simulator, web, worker, beat, demo (and their shells and children)

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

        # Ctrl-C: the terminal sends SIGINT to the foreground process group (run.sh, which is honcho).
        processes |= _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while (left := {pid for pid in processes if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"still running after Ctrl-C: {sorted(left)}\n{log.read_text(errors='replace')[-3000:]}"
        with socket.socket() as s:  # the web port is free again (no listener; TIME_WAIT is fine)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", web_port))
    finally:
        if proc.poll() is None or any(_alive(pid) for pid in processes):
            _kill_everything(proc.pid, processes | _descendants(proc.pid))
            proc.wait(timeout=10)
