"""Benchmarks for docs/architecture.md §7 ("Bars"): `make bench` runs `python -m bench.run` (bench/run.py).

Every benchmark runs against real processes: gunicorn serving `openplatform.wsgi`, a Celery worker on
Redis, PostgreSQL, and the WeChat simulator in this process with modelled latency. The bench owns its
database (`openplatform_bench`, dropped and recreated) and its Redis db index (14, flushed).
"""
