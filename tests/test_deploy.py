"""Production artefacts (issue #5): settings refuse to start half-configured, start cleanly with a real
production environment, the image's recipe works, and deploy/ stays in step with the contract.

Settings are checked in subprocesses with an environment built from scratch (never the test run's),
the way a production process starts. Every variable under test is set explicitly, to "" when it is
"missing", so that a developer's `.env` at the root (read with overwrite=False) cannot fill it in.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from io import StringIO
from pathlib import Path

import pytest
import requests
import yaml
from cryptography.fernet import Fernet
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from openplatform.component.models import ComponentVerifyTicket
from tests.worker import JOBS_WORKER_ARGS, UPLOADS_WORKER_ARGS

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
CONTRACT = REPO / "docs" / "contract.md"
HOST = "openplatform.example.com"
COMPONENT_VARS = [
    "WECHAT_COMPONENT_APPID",
    "WECHAT_COMPONENT_APPSECRET",
    "WECHAT_COMPONENT_TOKEN",
    "WECHAT_COMPONENT_AES_KEY",
]


def production_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """A complete production environment (DEBUG off), on throwaway local state."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "DEBUG": "",
        "ALLOW_MISSING_COMPONENT": "",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "WECHAT_COMPONENT_APPID": "wxcomponent0000001",
        "WECHAT_COMPONENT_APPSECRET": secrets.token_hex(16),
        "WECHAT_COMPONENT_TOKEN": secrets.token_hex(8),
        "WECHAT_COMPONENT_AES_KEY": "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
        "ALLOWED_HOSTS": HOST,
        "CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
        "BEHIND_TLS_PROXY": "1",
        "PUBLIC_BASE_URL": f"https://{HOST}",
        "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "no-static"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
        "CACHE_URL": "redis://127.0.0.1:6379/1",
        "LOG_JSON": "1",
    }
    env.update(overrides)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )


# --- production settings ------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["SECRET_KEY", "FIELD_ENCRYPTION_KEYS", *COMPONENT_VARS])
def test_production_refuses_to_start_without(missing, tmp_path):
    result = manage(production_env(tmp_path, **{missing: ""}), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr


@pytest.mark.parametrize("how", ["unset", "empty"])
def test_production_refuses_to_start_without_a_shared_cache(how, tmp_path):
    # Per-process counters are no limit: each web process would grant the whole rate again.
    env = production_env(tmp_path)
    if how == "unset":
        del env["CACHE_URL"]
    else:
        env["CACHE_URL"] = ""
    result = manage(env, "check")
    assert result.returncode != 0
    assert "CACHE_URL must be set when DEBUG is off" in result.stderr
    # ...under DEBUG, per-process memory is fine (one local process)
    assert manage({**env, "DEBUG": "1"}, "check").returncode == 0


def test_production_names_every_missing_component_credential_at_once(tmp_path):
    result = manage(production_env(tmp_path, **dict.fromkeys(COMPONENT_VARS, "")), "check")
    assert result.returncode != 0
    assert all(name in result.stderr for name in COMPONENT_VARS)
    assert "ALLOW_MISSING_COMPONENT" in result.stderr  # the message says how build steps get past it


@pytest.mark.parametrize("bad_key", ["tooshort", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEF=", "x" * 44])
def test_production_refuses_an_encoding_aes_key_that_is_not_43_alphanumerics(bad_key, tmp_path):
    result = manage(production_env(tmp_path, WECHAT_COMPONENT_AES_KEY=bad_key), "check")
    assert result.returncode != 0
    assert "WECHAT_COMPONENT_AES_KEY" in result.stderr
    assert bad_key not in result.stderr  # a secret is never echoed


def test_allow_missing_component_lets_build_steps_import_the_settings(tmp_path):
    env = production_env(tmp_path, ALLOW_MISSING_COMPONENT="1", **dict.fromkeys(COMPONENT_VARS, ""))
    result = manage(env, "check")
    assert result.returncode == 0, result.stderr
    # ...but it lifts only the component's credentials, never the secrets
    result = manage({**env, "SECRET_KEY": ""}, "check")
    assert result.returncode != 0 and "SECRET_KEY" in result.stderr


def test_a_lease_too_short_for_one_upload_call_is_refused(tmp_path):
    # A run starts an upload call only with 2 x WECHAT_HTTP_TIMEOUT + 1 s of its lease left.
    result = manage(production_env(tmp_path, UPLOAD_LEASE_SECONDS="21", WECHAT_HTTP_TIMEOUT="10"), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "UPLOAD_LEASE_SECONDS" in result.stderr
    assert manage(production_env(tmp_path, UPLOAD_LEASE_SECONDS="22", WECHAT_HTTP_TIMEOUT="10"), "check").returncode == 0


@pytest.mark.parametrize(("value", "disabled"), [("", False), ("1", True)])
def test_transaction_pooling_turns_server_side_cursors_off(tmp_path, value, disabled):
    env = production_env(tmp_path, DATABASE_URL="postgres://u:p@pgbouncer:6432/openplatform",
                         DATABASE_TRANSACTION_POOLING=value)
    result = manage(env, "shell", "-c",
                    "from django.conf import settings; print(settings.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == str(disabled)


def test_production_env_passes_check_deploy_without_security_warnings(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "ERROR")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "(security." not in output, output


def test_check_deploy_is_clean_with_django_redirecting_to_https_too(tmp_path):
    result = manage(production_env(tmp_path, SECURE_SSL_REDIRECT="1"), "check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert "(security." not in result.stdout + result.stderr


def test_debug_mode_needs_no_production_secrets(tmp_path):
    env = production_env(
        tmp_path, DEBUG="1", SECRET_KEY="", FIELD_ENCRYPTION_KEYS="", **dict.fromkeys(COMPONENT_VARS, "")
    )
    result = manage(env, "check")
    assert result.returncode == 0, result.stderr


def test_var_dir_moves_local_state(tmp_path):
    var_dir = tmp_path / "elsewhere" / "var"
    env = production_env(tmp_path, DEBUG="1", VAR_DIR=str(var_dir), STATIC_ROOT="",
                         DJANGO_SETTINGS_MODULE="openplatform.settings")
    del env["DATABASE_URL"], env["CELERY_BROKER_URL"]  # the embedded defaults
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.DATABASES['default']['NAME']); print(s.STATIC_ROOT)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    db_name, static_root = result.stdout.split()
    assert Path(db_name) == var_dir / "db.sqlite3"
    assert Path(static_root) == var_dir / "static"
    assert (var_dir / "broker" / "in").is_dir()


# --- the image: its build step, its command and its health check ----------------------------------------


def _dockerfile_lines() -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip("\\").strip() + " "
        if not raw.rstrip().endswith("\\"):
            lines.append(current.strip())
            current = ""
    return lines


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dockerfile_shape():
    lines = _dockerfile_lines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms and all(line.split()[1] == "python:3.11-slim" for line in froms)
    assert any("pip install --no-cache-dir" in line for line in lines)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    cmd = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
    assert cmd[:2] == ["gunicorn", "openplatform.wsgi"]


def test_image_recipe_collects_static_then_gunicorn_serves_it_and_the_healthcheck_passes(tmp_path):
    lines = _dockerfile_lines()
    # The build step, with the Dockerfile's own build-time environment (only the paths moved here).
    run = next(line for line in lines if "collectstatic" in line)
    build_env = dict(re.findall(r"\b([A-Z_]+)=(\S+)", run.split("python manage.py collectstatic")[0]))
    assert build_env["ALLOW_MISSING_COMPONENT"] == "1" and build_env["DEBUG"] == "0"
    static_root = tmp_path / "static"
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1",
        **dict.fromkeys(["SECRET_KEY", "FIELD_ENCRYPTION_KEYS", *COMPONENT_VARS], ""),
        **build_env,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'build.sqlite3'}", "VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(static_root),
    }
    result = manage(env, "collectstatic", "--noinput", "-v0", timeout=120)
    assert result.returncode == 0, result.stderr
    assert (static_root / "admin" / "css" / "base.css").is_file()

    # The image's default command, bound to a free local port instead of 0.0.0.0:8000.
    cmd = json.loads(next(line for line in lines if line.startswith("CMD "))[4:])
    port = _free_port()
    cmd[cmd.index("--bind") + 1] = f"127.0.0.1:{port}"
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    env = production_env(tmp_path, STATIC_ROOT=str(static_root), WEB_CONCURRENCY="1")
    server = subprocess.Popen(
        [gunicorn, *cmd[1:]], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    healthcheck = [sys.executable, str(DEPLOY / "healthcheck.py")]
    probe_env = {"PATH": env["PATH"], "HEALTHCHECK_PORT": str(port), "ALLOWED_HOSTS": f".{HOST},localhost"}
    try:
        deadline = time.monotonic() + 30
        while True:
            probe = subprocess.run(healthcheck, env=probe_env, capture_output=True, text=True, timeout=10)
            if probe.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(0.3)
        assert probe.returncode == 0, probe.stderr + (server.stderr.read().decode() if server.poll() else "")
        base = f"http://127.0.0.1:{port}"
        css = requests.get(f"{base}/static/admin/css/base.css", headers={"Host": HOST}, timeout=5)
        assert css.status_code == 200 and "text/css" in css.headers["Content-Type"]
        assert requests.get(f"{base}/healthz", headers={"Host": "evil.example"}, timeout=5).status_code == 400
        answer = requests.get(f"{base}/healthz", headers={"Host": HOST, "X-Forwarded-Proto": "https"}, timeout=5)
        assert answer.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        assert answer.headers["X-Frame-Options"] == "DENY"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    # and the probe fails once nothing answers
    assert subprocess.run(healthcheck, env=probe_env, capture_output=True, timeout=10).returncode == 1


def test_healthcheck_host_is_the_first_concrete_allowed_host():
    sys.path.insert(0, str(DEPLOY))
    try:
        from healthcheck import probe_host
    finally:
        sys.path.remove(str(DEPLOY))
    assert probe_host("openplatform.example.com,localhost") == "openplatform.example.com"
    assert probe_host("*, .example.com") == "example.com"
    assert probe_host("") == "localhost"
    assert probe_host("*") == "localhost"


# --- deploy/env.example and the contract ----------------------------------------------------------------


def _env_example_names() -> set[str]:
    """NAME=value lines, including commented-out ones (`# NAME=default` documents a default)."""
    text = (DEPLOY / "env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def _table_variables(markdown: str, heading: str) -> set[str]:
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            names.update(n for n in re.findall(r"`([A-Z_][A-Z0-9_]*)`", first_cell) if not n.startswith("_"))
    return names


def test_env_example_names_every_variable_of_the_contract():
    wanted = _table_variables(CONTRACT.read_text(), "## Configuration")
    assert len(wanted) >= 12  # the table was found and parsed
    assert wanted - _env_example_names() == set()


def test_env_example_names_every_variable_of_the_team_contract():
    """The team's own contract (shared/CONTRACT.md beside the repository, as CI lays it out) too."""
    team = REPO.parent / "shared" / "CONTRACT.md"
    if not team.is_file():
        pytest.skip(f"{team} not found (shared/ is laid beside the repository in CI, not in every checkout)")
    wanted = _table_variables(team.read_text(), "## Configuration")
    assert len(wanted) >= 12  # the table was found and parsed
    assert wanted - _env_example_names() == set()


def test_env_example_names_every_variable_of_the_readme_and_the_settings():
    readme = _table_variables((REPO / "README.md").read_text(), "## Configuration")
    settings_source = (REPO / "openplatform" / "settings.py").read_text()
    read_by_settings = set(re.findall(r"\benv(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", settings_source))
    assert {"SECRET_KEY", "CACHE_URL", "LOG_JSON"} <= readme and "ALLOWED_HOSTS" in read_by_settings
    assert (readme | read_by_settings) - _env_example_names() == set()


def test_env_example_parses_as_an_env_file_and_has_no_real_secrets():
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), line
            assert "$" not in value and " #" not in value, line
            values[name] = value
    for secret in ["SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "WECHAT_COMPONENT_APPSECRET", "POSTGRES_PASSWORD"]:
        assert values[secret] == "CHANGE_ME"
    assert values["DEBUG"] == "0"


# --- deploy/compose.yaml and deploy/Procfile ----------------------------------------------------------


def test_compose_services():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    beats = [name for name, svc in services.items() if "beat" in (svc.get("command") or [])]
    assert beats == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    for name in ["worker", "jobs"]:
        assert services[name]["command"][:4] == ["celery", "-A", "openplatform", "worker"]
    assert _pool_and_queues(services["worker"]["command"]) == _pool_and_queues(UPLOADS_WORKER_ARGS)
    assert _pool_and_queues(services["jobs"]["command"]) == _pool_and_queues(JOBS_WORKER_ARGS)
    assert "command" not in services["web"]  # the image's gunicorn
    assert services["migrate"]["command"][1:3] == ["manage.py", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ["web", "worker", "jobs", "beat"]:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name, svc in services.items():
        assert ("profiles" in svc) == (name == "simulator"), name
    simulator = services["simulator"]
    assert simulator["profiles"] == ["staging"]
    assert simulator["command"][:3] == ["python", "manage.py", "wechat_simulator"]
    assert simulator["command"][3:] == ["--host", "0.0.0.0", "--port", "9000"]
    # published on the host's loopback only (browsers go through the TLS proxy or a tunnel)
    assert simulator["ports"] == ["${SIMULATOR_PUBLISH:-127.0.0.1:9000}:9000"]
    staging = (DEPLOY / "env.example").read_text().split("Staging only", 1)[1]
    assert "# COMPOSE_PROFILES=staging" in staging
    assert "# WECHAT_API_BASE=http://simulator:9000" in staging
    assert "# WECHAT_MP_BASE=" in staging
    assert "# SIMULATOR_CONTROL_TOKEN=CHANGE_ME" in staging
    assert "# SIMULATOR_PUBLISH=127.0.0.1:" in staging


def _docker_compose() -> list[str]:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client: `docker compose config` not checked")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin: `docker compose config` not checked")
    return [docker, "compose"]


@pytest.mark.parametrize("profile", [None, "staging"])
def test_docker_compose_config_validates(profile):
    compose = _docker_compose()
    env = {**os.environ, "OPENPLATFORM_ENV_FILE": "env.example"}
    for name in ["COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "DATABASE_URL", "CELERY_BROKER_URL"]:
        env.pop(name, None)
    args = [*compose, "-f", str(DEPLOY / "compose.yaml"), "--env-file", str(DEPLOY / "env.example")]
    if profile:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config", "--format", "json"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    expected = {"postgres", "redis", "migrate", "web", "worker", "jobs", "beat"} | ({"simulator"} if profile else set())
    assert set(services) == expected
    assert services["web"]["environment"]["DATABASE_URL"].startswith("postgres://openplatform:CHANGE_ME@postgres:5432/")


def _pool_and_queues(argv) -> tuple[str | None, str | None]:
    """A `celery worker` command's pool and queues (the defaults when not given: prefork, `celery`)."""
    argv, pool, queues = list(argv), "prefork", "celery"
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-P", "--pool"):
            pool = value
        elif flag in ("-Q", "--queues"):
            queues = value
    return pool, queues


def _procfile(path: Path) -> dict[str, str]:
    return dict(
        line.split(":", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )


def test_procfile_runs_web_two_workers_and_one_beat():
    procs = _procfile(DEPLOY / "Procfile")
    assert set(procs) == {"web", "worker", "jobs", "beat"}
    assert shlex.split(procs["web"])[:2] == ["gunicorn", "openplatform.wsgi"]
    assert shlex.split(procs["worker"])[:4] == ["celery", "-A", "openplatform", "worker"]
    assert shlex.split(procs["jobs"])[:4] == ["celery", "-A", "openplatform", "worker"]
    assert shlex.split(procs["beat"])[:4] == ["celery", "-A", "openplatform", "beat"]


def test_uploads_run_on_the_threads_pool_alike_in_deploy_make_run_and_the_tests():
    """Deploy, `make run` and the real-worker tests (tests/worker.py) run the same two workers: uploads
    on the threads pool, every other task on the default queue on prefork; and uploads are routed there."""
    uploads, jobs = _pool_and_queues(UPLOADS_WORKER_ARGS), _pool_and_queues(JOBS_WORKER_ARGS)
    assert uploads == ("threads", "uploads") and jobs == ("prefork", "celery")
    for procfile in [DEPLOY / "Procfile", REPO / "Procfile.dev"]:
        procs = _procfile(procfile)
        assert _pool_and_queues(shlex.split(procs["worker"])) == uploads, procfile
        assert _pool_and_queues(shlex.split(procs["jobs"])) == jobs, procfile
    from openplatform.celery import app

    def queue(task: str) -> str:
        return app.amqp.router.route({}, task)["queue"].name

    assert queue("uploads.upload_image") == "uploads"
    for task in ["uploads.sweep_stuck_uploads", "uploads.purge_image_bytes", "tenants.process_component_event",
                 "tenants.refresh_authorizer_tokens_batch", "tenants.reconcile_authorizers"]:
        assert queue(task) == "celery", task


# --- start_push_ticket --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_start_push_ticket_brings_a_fresh_ticket(live_component):
    appid = django_settings.WECHAT_COMPONENT_APPID
    before = ComponentVerifyTicket.objects.filter(component_appid=appid).count()
    out = StringIO()
    call_command("start_push_ticket", stdout=out)
    assert appid in out.getvalue() and "/wechat/component/events/" in out.getvalue()
    deadline = time.monotonic() + 10
    while ComponentVerifyTicket.objects.filter(component_appid=appid).count() == before:
        assert time.monotonic() < deadline, "no ticket arrived after api_start_push_ticket"
        time.sleep(0.05)


def test_start_push_ticket_reports_wechat_errors_without_the_secret(component, settings):
    settings.WECHAT_COMPONENT_APPSECRET = "wrong-secret-value"
    with pytest.raises(CommandError) as excinfo:
        call_command("start_push_ticket", stdout=StringIO())
    assert "api_start_push_ticket failed" in str(excinfo.value)
    assert "wrong-secret-value" not in str(excinfo.value)


# --- the lock files (supply chain) ------------------------------------------------------------------


def _locked(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (pinned version, number of hashes) from a pip-compile --generate-hashes file."""
    pins, current = {}, None
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ \\]+)", line)
        if match:
            current = re.sub(r"[-_.]+", "-", match.group(1)).lower()
            pins[current] = (match.group(2), 0)
        elif current and line.strip().startswith("--hash=sha256:"):
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def _declared(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0]).lower() for r in requirements}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def test_every_dependency_is_pinned_with_hashes_and_past_the_known_cves():
    prod, dev = _locked(REPO / "requirements" / "prod.txt"), _locked(REPO / "requirements" / "dev.txt")
    assert _declared() <= set(prod), _declared() - set(prod)
    assert _declared() | _declared("dev") <= set(dev), (_declared() | _declared("dev")) - set(dev)
    for pins in (prod, dev):
        assert all(hashes for _, hashes in pins.values()), [n for n, (_, h) in pins.items() if not h]
        assert _version(pins["django"][0]) >= (5, 2, 11)
        assert _version(pins["requests"][0]) >= (2, 32, 4)
        assert _version(pins["cryptography"][0]) >= (44, 0, 1)
    # the same version of each runtime package in both files
    assert {n: v for n, (v, _) in dev.items() if n in prod} == {n: v for n, (v, _) in prod.items()}


def test_the_image_and_make_install_use_the_lock_files_with_hashes_required():
    assert any("--require-hashes -r requirements.txt" in line for line in _dockerfile_lines())
    assert "COPY requirements/prod.txt" in (DEPLOY / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements/dev.txt" in makefile and "--no-deps -e ." in makefile


def test_the_image_copies_every_package_the_project_installs():
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    for pattern in packages:
        name = pattern.rstrip("*")
        assert f"COPY {name} ./{name}" in dockerfile, name
