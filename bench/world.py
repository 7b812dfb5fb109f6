"""The system under test, seeded through the real services: simulator, component, tenant, key, authorizers."""

from __future__ import annotations

import io
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from PIL import Image

from bench.env import COMPONENT
from bench.procs import CpuMeter, Process, WorkerConfig, start_workers
from openplatform.wechat.simulator.control import SimulatorControl
from openplatform.wechat.simulator.server import SimulatorServer

UPLOADIMG = "/cgi-bin/media/uploadimg"
AUTHORIZER_TOKEN = "/cgi-bin/component/api_authorizer_token"


def sample_image(width: int = 640, height: int = 480) -> bytes:
    """A photo-like JPEG (gradient plus seeded noise, quality 85): the kind of image an article carries."""
    rng = random.Random(7)
    noise = rng.randbytes(width * height * 3)
    pixels = bytes(
        ((x * 255 // width) + (y * 255 // height) // 2 + (noise[(y * width + x) * 3 + c] & 0x1F)) & 0xFF
        for y in range(height)
        for x in range(width)
        for c in range(3)
    )
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


@dataclass
class World:
    sim: SimulatorServer | SimulatorProcess  # in this process (bench/dedupe.py) or its own (make bench)
    control: SimulatorControl
    image: bytes
    logs: Path
    api_key: str = ""
    tenant: object = None
    authorizer: object = None
    web_url: str = ""
    web: Process | None = None
    #: The application's Celery workers now running: the main ones (`worker_config`), or a scenario's own.
    workers: list[Process] = field(default_factory=list)
    worker_config: WorkerConfig | None = None
    #: bench/baseline.py's worker, while a scenario runs it.
    baseline: Process | None = None
    cpu: CpuMeter | None = None
    notes: list[str] = field(default_factory=list)
    _serial: itertools.count = field(default_factory=itertools.count)

    def unique_image(self) -> bytes:
        """`image` with a numbered JPEG comment after SOI: the same picture and size, bytes of its own, so
        deduplication (a repeat reuses the earlier URL) does not turn the benchmark into cache hits."""
        comment = b"bench %08d" % next(self._serial)
        return self.image[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + self.image[2:]

    # -- simulator ----------------------------------------------------------------------------------------

    def count(self, path: str) -> int:
        """Calls the simulator has had to `path` (its control API: the simulator may run in another process)."""
        return self.control.counters().get(path, 0)

    def grant_many(self, n: int, func_info=(1, 11)) -> list[tuple[str, str]]:
        """`n` Official Accounts authorize us at once (bench/simulator.py): [(appid, refresh_token)]."""
        response = requests.post(f"{self.sim.url}/_bench/grants", json={"n": n, "func_info": list(func_info)},
                                 timeout=600)
        response.raise_for_status()
        return [tuple(pair) for pair in response.json()["grants"]]

    def outcomes(self, path: str = UPLOADIMG) -> dict[str, int]:
        """{errcode: calls} of every call to `path` so far ("0" for success; bench/simulator.py only)."""
        response = requests.get(f"{self.sim.url}/_bench/outcomes", params={"path": path}, timeout=60)
        response.raise_for_status()
        return response.json()

    # -- workers ------------------------------------------------------------------------------------------

    def start_workers(self, config: WorkerConfig, *, queues: str = "uploads,celery", tag: str = "bench") -> None:
        """Replace the running workers (if any) by `config`'s, listening on `queues`."""
        self.stop_workers()
        self.workers = start_workers(config, self.logs / "worker.log", queues=queues, tag=tag)

    def stop_workers(self) -> None:
        if self.cpu is not None:
            self.cpu.sample()  # the CPU they used so far stays theirs (CpuMeter keeps an exited process's)
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def restore_workers(self) -> None:
        """The main workers again, after a scenario that ran its own."""
        if self.worker_config is not None:
            self.start_workers(self.worker_config)

    def store_ticket(self) -> None:
        from django.utils import timezone

        from openplatform.component.models import ComponentVerifyTicket
        from openplatform.component.tickets import component_ticket_store

        raw = self.control.issue_ticket(COMPONENT["component_appid"])
        row = component_ticket_store(component_appid=COMPONENT["component_appid"], ticket=raw, pushed_at=timezone.now())
        # The model's default bound the real clock; on the simulated day the ticket arrives "now" there.
        ComponentVerifyTicket.objects.filter(pk=row.pk).update(received_at=timezone.now())

    def onboard(self, tenant, func_info=(1, 11)):
        """An Official Account authorizes us in the simulator; we exchange its auth code (api_query_auth)."""
        from tenants.services.authorization import authorization_code_exchange

        grant = self.control.authorize(COMPONENT["component_appid"], func_info=list(func_info))
        return authorization_code_exchange(auth_code=grant["auth_code"], tenant=tenant)

    # -- the API ------------------------------------------------------------------------------------------

    def post_upload(self, session, authorizer_appid: str | None = None) -> str:
        response = session.post(
            f"{self.web_url}/api/v1/uploads/",
            files={"media": ("image.jpg", self.unique_image(), "image/jpeg")},
            data={"authorizer_appid": authorizer_appid or self.authorizer.appid},
            headers={"Authorization": f"Api-Key {self.api_key}"},
            timeout=60,
        )
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/v1/uploads/ answered {response.status_code}: {response.text[:200]}")
        return response.json()["id"]

    def wait_final(self, ids: list[str], timeout: float = 600.0) -> dict[str, int]:
        """Poll the database until every upload in `ids` is final; {status: count}."""
        from django.db.models import Count

        from uploads.models import Upload

        deadline = time.monotonic() + timeout
        pending = list(ids)
        while pending:
            done = set()
            for start in range(0, len(pending), 2000):
                chunk = pending[start : start + 2000]
                done |= {
                    str(pk)
                    for pk in Upload.objects.final().filter(pk__in=chunk).values_list("pk", flat=True)
                }
            pending = [pk for pk in pending if pk not in done]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pending)} uploads still not final after {timeout:.0f} s")
            # Polling is not free (the bench shares the machine): a long wait is polled less often.
            time.sleep(min(0.5, 0.02 + len(pending) / 10_000))
        statuses: dict[str, int] = {}
        for start in range(0, len(ids), 2000):
            for row in (
                Upload.objects.filter(pk__in=ids[start : start + 2000]).values("status").annotate(n=Count("pk"))
            ):
                statuses[row["status"]] = statuses.get(row["status"], 0) + row["n"]
        return statuses


def start_simulator() -> tuple[SimulatorServer, SimulatorControl]:
    """The simulator in this process (bench/dedupe.py, whose WeChat calls are few)."""
    sim = SimulatorServer().start()
    sim.register_component(**COMPONENT, events_url=None)
    return sim, SimulatorControl(sim.url)


class SimulatorProcess:
    """bench/simulator.py served by gunicorn (one gthread worker process): `url`, `pid`, `stop()`."""

    #: Threads of the simulator's worker: every call in flight holds one while it sleeps its latency.
    THREADS = 128

    def __init__(self, port: int, log: Path) -> None:
        from bench.env import VENV_BIN

        self.url = f"http://127.0.0.1:{port}"
        argv = [
            str(VENV_BIN / "gunicorn"), "bench.simulator:make_app()", "--bind", f"127.0.0.1:{port}",
            "--workers", "1", "--worker-class", "gthread", "--threads", str(self.THREADS),
            "--keep-alive", "75", "--backlog", "2048", "--graceful-timeout", "5", "--timeout", "600",
            "--log-level", "warning",
        ]
        self.proc = Process("simulator", argv, log)
        deadline = time.monotonic() + 30
        while True:
            self.proc.check()
            try:
                if requests.get(f"{self.url}/_sim/counters", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.proc.stop()
                raise RuntimeError("the simulator process did not answer within 30 s")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.stop()


def start_simulator_process(port: int, log: Path) -> tuple[SimulatorProcess, SimulatorControl]:
    sim = SimulatorProcess(port, log)
    return sim, SimulatorControl(sim.url)


def seed(world: World) -> None:
    """A tenant, its API key and one authorized Official Account, through the real services."""
    from tenants.models import Tenant
    from tenants.services.keys import api_key_create

    world.store_ticket()
    world.tenant = Tenant.objects.create(slug="bench", name="Bench Ltd")
    _, world.api_key = api_key_create(tenant=world.tenant, name="bench")
    world.authorizer = world.onboard(world.tenant)
