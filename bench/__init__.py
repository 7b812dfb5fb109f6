"""Benchmarks for docs/architecture.md §7 ("Bars"): `make bench` runs `python -m bench.run` (bench/run.py).

Every benchmark runs against real processes: gunicorn serving `openplatform.wsgi`, Celery workers on
Redis, PostgreSQL, the WeChat simulator with modelled latency (bench/simulator.py, a process of its own)
and, as the baseline of issue 10, a minimal Celery task of its own (bench/baseline.py). The bench owns its
database (`openplatform_bench`, dropped and recreated) and its Redis db index (14, flushed).
"""
