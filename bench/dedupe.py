"""WeChat calls saved by deduplication, for a workload where 30 % of uploads repeat an earlier image.

    .venv/bin/python -m bench.dedupe [--uploads 300] [--repeat-rate 0.3]

Runs in one process against the in-process simulator (its uploadimg counter is the ground truth), on a
PostgreSQL database of its own (BENCH_DEDUPE_DATABASE_URL, default
postgres://postgres@127.0.0.1:5432/openplatform_bench_dedupe, dropped and recreated); no broker, no
Redis. Each upload goes through the REST API (Django's test client: authentication, validation,
dedupe) and its task body runs inline. The same sequence of images is sent twice, to two authorizers of
one tenant: once with dedupe off (UPLOAD_DEDUPE_DAYS=0), once on. Two orders:

- sequential: each upload is final before the next is sent (a merchant's server uploading as it goes):
  repeats are final in the 202 (the accept path's check);
- burst: every upload is accepted before any is sent (a batch job), then the tasks run one after the
  other: repeats are caught by the task's check, once the first upload of the bytes has succeeded.
  (Identical uploads whose tasks run at the same moment would both be sent.)

Also prints the SQL queries of one accepted upload (what Django logs, savepoints included).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import sys
import time

os.environ.setdefault(
    "BENCH_DATABASE_URL",
    os.environ.get("BENCH_DEDUPE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/openplatform_bench_dedupe"),
)

from bench import env  # noqa: E402 (reads BENCH_DATABASE_URL at import)

UPLOADIMG = "/cgi-bin/media/uploadimg"


def workload(count: int, repeat_rate: float, seed: int = 13) -> list[int]:
    """Image numbers to upload in order: round(count * repeat_rate) of them repeat an earlier image."""
    rng = random.Random(seed)
    repeat_at = set(rng.sample(range(1, count), round(count * repeat_rate)))
    sequence: list[int] = []
    for i in range(count):
        sequence.append(rng.choice(sequence) if i in repeat_at else len(set(sequence)))
    return sequence


def image(number: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (number % 256, number // 256 % 256, 99)).save(buf, format="PNG")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.dedupe", description=__doc__.split("\n\n")[0])
    p.add_argument("--uploads", type=int, default=300)
    p.add_argument("--repeat-rate", type=float, default=0.3)
    args = p.parse_args(argv)

    from bench.world import World, seed, start_simulator

    sim, control = start_simulator()
    env.configure_environ(simulator_url=sim.url)
    os.environ.update({"CELERY_BROKER_URL": "memory://", "CACHE_URL": "locmemcache://"})
    env.reset_database()
    env.setup_django()

    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from uploads.services.process import upload_process

    world = World(sim=sim, control=control, image=b"", logs=env.ROOT / "bench" / "results")
    seed(world)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {world.api_key}")
    sequence = workload(args.uploads, args.repeat_rate)
    repeats = len(sequence) - len(set(sequence))
    images = {n: image(n) for n in set(sequence)}

    def post(appid: str, number: int) -> dict:
        response = client.post("/api/v1/uploads/", {"media": io.BytesIO(images[number]), "authorizer_appid": appid},
                               format="multipart")
        assert response.status_code == 202, response.content
        return response.json()

    def run(*, dedupe: bool, burst: bool) -> int:
        """uploadimg calls for the whole sequence, to a fresh authorizer."""
        authorizer = world.onboard(world.tenant)
        before = world.count(UPLOADIMG)
        with override_settings(UPLOAD_DEDUPE_DAYS=30 if dedupe else 0):
            accepted = []
            for number in sequence:
                body = post(authorizer.appid, number)
                if burst:
                    accepted.append(body)
                elif body["status"] == "queued":
                    upload_process(upload_id=body["id"])
            for body in accepted:
                if body["status"] == "queued":
                    upload_process(upload_id=body["id"])
        return world.count(UPLOADIMG) - before

    started = time.monotonic()
    rows = []
    for burst in (False, True):
        without = run(dedupe=False, burst=burst)
        with_ = run(dedupe=True, burst=burst)
        rows.append(("burst" if burst else "sequential", without, with_))

    # Queries of one accepted upload (the repeat is of an image that succeeded).
    authorizer = world.onboard(world.tenant)
    post(authorizer.appid, 0)
    upload_process(upload_id=post(authorizer.appid, 1)["id"])

    def queries(number: int) -> int:
        with CaptureQueriesContext(connection) as ctx:
            post(authorizer.appid, number)
        return len(ctx.captured_queries)

    with override_settings(UPLOAD_DEDUPE_DAYS=0):
        off = queries(2)
    on_new, on_repeat = queries(3), queries(1)

    print(f"workload: {args.uploads} uploads, {len(set(sequence))} distinct images, {repeats} repeats "
          f"({repeats / len(sequence):.0%}); one authorizer per run; {time.monotonic() - started:.0f} s")
    print("| order | uploadimg calls, dedupe off | dedupe on | calls saved |")
    print("|---|---|---|---|")
    for name, without, with_ in rows:
        print(f"| {name} | {without} | {with_} | {without - with_} ({(without - with_) / without:.0%}) |")
    print(f"SQL queries per accepted upload: dedupe off {off}; dedupe on: new bytes {on_new}, a repeat {on_repeat}")
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
