"""Peak memory of one upload request, per hostile image (bench/hostile_images.py), in a fresh web process.

    .venv/bin/python -m bench.memory            # every case, as a table
    .venv/bin/python -m bench.memory --json     # one JSON object per case
    .venv/bin/python -m bench.memory --case png-6300x6300-rgba-166KB
    .venv/bin/python -m bench.memory --corpus-limits '{"max_pixels": 24000000, ...}'  # pin the files

Each case runs in its own Python process, like a web worker: Django set up, two small uploads to warm it
(imports, the database connection, Pillow's plugins), then the freed heap returned to the system
(malloc_trim) and the kernel's peak-RSS mark reset to the current RSS (/proc/self/clear_refs, 5). One
POST /api/v1/uploads/ with the case's image then goes through Django's WSGI handler exactly as a server
hands it a request (the body is a stream; multipart parsing, upload handlers, API-key authentication,
image checks, the database write). The figure is VmHWM after minus VmRSS before: how much that one
request grew the process at its peak, accepted or refused. docs/architecture.md §7; README "Limits".

The database is SQLite in a temporary directory (the request's cost, not the database server's, is
measured), the broker in-process memory. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The bound of docs/architecture.md §7: one request grows a web process by at most this much.
BOUND_BYTES = 64_000_000
URL = "/api/v1/uploads/"
APPID = "wxmemory0000000001"


def _status_kb(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        # The production settings with test-only secrets (DEBUG off, as in a deployed web process).
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{workdir / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "memory://",
        "CACHE_URL": "locmemcache://",
        "API_THROTTLE_RATE": "1000000/min",
        "ALLOWED_HOSTS": "testserver",
        "VAR_DIR": str(workdir / "var"),
        "LOG_LEVEL": "CRITICAL",
        "PYTHONPATH": str(ROOT),
    })
    env.pop("TEST_REDIS_URL", None)
    return env


# -- in the child -----------------------------------------------------------------------------------------


def _django():
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()


def _prepare() -> dict:
    """Migrate the fresh database; one tenant, one API key, one authorized account. Prints the limits."""
    _django()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    from tenants.models import Authorizer, Tenant
    from tenants.services.keys import api_key_create
    from uploads import images

    tenant = Tenant.objects.create(slug="memory", name="Memory")
    Authorizer.objects.create(tenant=tenant, component_appid=settings.WECHAT_COMPONENT_APPID, appid=APPID,
                              func_info=[11], account_type="official_account")
    _, key = api_key_create(tenant=tenant, name="memory")
    fit_limit = getattr(images, "fit_input_limit", None)  # (and the budgets: absent before issue 11)
    return {
        "api_key": key,
        "max_pixels": images.MAX_PIXELS,
        "decode_bytes": getattr(images, "MAX_DECODE_BYTES", None),
        "fit_decode_bytes": getattr(images, "MAX_FIT_DECODE_BYTES", None),
        "fit_input_bytes": fit_limit() if fit_limit else images.MAX_FIT_INPUT_BYTES,
        "upload_bytes": images.MAX_UPLOAD_BYTES,
    }


def multipart(data: bytes, *, fit: str | None, appid: str = APPID) -> tuple[bytes, str, str]:
    """(body, content type, query string) of an upload; `fit` as a form field before `media`, or in the query."""
    boundary = "memorybench7f3a9c"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="authorizer_appid"\r\n\r\n{appid}\r\n'.encode()]
    if fit == "form":
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="fit"\r\n\r\ntrue\r\n'.encode())
    parts += [
        f'--{boundary}\r\nContent-Disposition: form-data; name="media"; filename="image"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        data,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}", "fit=true" if fit == "query" else ""


def _call(handler, api_key: str, body: bytes, content_type: str, query: str) -> tuple[int, dict]:
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": URL, "QUERY_STRING": query, "SCRIPT_NAME": "",
        "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "testserver",
        "HTTP_AUTHORIZATION": f"Api-Key {api_key}", "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
    }
    status = []
    chunks = handler(environ, lambda s, headers, exc_info=None: status.append(int(s.split()[0])))
    payload = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    try:
        body_json = json.loads(payload)
    except ValueError:
        body_json = {"raw": payload[:200].decode(errors="replace")}
    return status[0], body_json


def _run_case(path: Path, fit: str | None, api_key: str) -> dict:
    _django()
    from django.core.handlers.wsgi import WSGIHandler
    from PIL import Image

    handler = WSGIHandler()
    body, content_type, query = multipart(path.read_bytes(), fit=fit)
    for fmt in ("PNG", "JPEG"):  # warm up: imports, the connection, the code paths
        small = io.BytesIO()
        Image.new("RGB", (64, 48), (10, 20, 30)).save(small, format=fmt)
        status, _ = _call(handler, api_key, *multipart(small.getvalue(), fit=fit))
        assert status == 202, status
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark (VmHWM) starts again from VmRSS
    rss_before = _status_kb("VmRSS")
    started = time.monotonic()
    status, answer = _call(handler, api_key, body, content_type, query)
    seconds = time.monotonic() - started
    peak = _status_kb("VmHWM")
    return {
        "status": status, "code": answer.get("code") or answer.get("status"),
        "rss_before_kb": rss_before, "peak_kb": peak, "growth_bytes": (peak - rss_before) * 1024,
        "seconds": round(seconds, 3),
    }


# -- in the parent ------------------------------------------------------------------------------------------


class Bench:
    """A prepared database and API key, and the corpus at the limits in force."""

    def __init__(self, workdir: Path, corpus_limits: dict | None = None):
        self.workdir = workdir
        self.env = _environment(workdir)
        out = subprocess.run([sys.executable, "-m", "bench.memory", "--prepare"], cwd=ROOT, env=self.env,
                             capture_output=True, text=True, check=False)
        if out.returncode:
            raise RuntimeError(f"preparing the bench database failed:\n{out.stderr}")
        self.limits = json.loads(out.stdout.strip().splitlines()[-1])
        from bench.hostile_images import corpus

        limits = corpus_limits or {k: v for k, v in self.limits.items() if k != "api_key"}
        self.cases = {c.name: c for c in corpus(**limits)}

    def measure(self, name: str) -> dict:
        case = self.cases[name]
        path = self.workdir / f"{name}.bin"
        data = case.build()
        path.write_bytes(data)
        cmd = [sys.executable, "-m", "bench.memory", "--run", str(path), "--fit", case.fit or "none",
               "--api-key", self.limits["api_key"]]
        out = subprocess.run(cmd, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False)  # noqa: S603 (our own argv)
        path.unlink()
        if out.returncode:
            return {"case": name, "error": out.stderr.strip().splitlines()[-1:], "size": len(data)}
        return {"case": name, "size": len(data), "fit": case.fit, "note": case.note,
                **json.loads(out.stdout.strip().splitlines()[-1])}


def _table(rows: list[dict]) -> str:
    lines = ["| case | file bytes | fit | answer | peak growth (MB) | time (s) |", "|---|---:|---|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['size']:,} | | crashed: {r['error']} | | |")
            continue
        growth = r["growth_bytes"] / 1e6
        mark = " **over**" if r["growth_bytes"] > BOUND_BYTES else ""
        lines.append(f"| {r['case']} | {r['size']:,} | {r['fit'] or ''} | {r['status']} {r['code']} | "
                     f"{growth:.1f}{mark} | {r['seconds']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--json", action="store_true", help="one JSON object per case instead of a table")
    parser.add_argument("--corpus-limits", type=json.loads, metavar="JSON",
                        help="build the corpus at these limits, not the code's (the same files for two versions "
                        "of the code), e.g. the 'limits' line another run printed")
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fit", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        print(json.dumps(_prepare()))
        return 0
    if args.run:
        print(json.dumps(_run_case(args.run, None if args.fit == "none" else args.fit, args.api_key)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        bench = Bench(Path(tmp), args.corpus_limits)
        names = args.case or list(bench.cases)
        rows = []
        for name in names:
            row = bench.measure(name)
            rows.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
        if not args.json:
            limits = {k: v for k, v in bench.limits.items() if k != "api_key"}
            print(f"limits: {json.dumps(limits)}; bound {BOUND_BYTES / 1e6:.0f} MB a request")
            print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
