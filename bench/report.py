"""One markdown table for every bar, plus the machine it ran on."""

from __future__ import annotations

PASS, FAIL, INFO = "pass", "**FAIL**", "reported"


def _verdict(ok: bool) -> str:
    return PASS if ok else FAIL


def _ours(cpu: dict[str, float]) -> float:
    return sum(v for k, v in cpu.items() if k != "other processes")


def rows(results: dict) -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    tp = results.get("throughput")
    if tp:
        out += [
            (f"1. End-to-end throughput: {tp['n']} uploads, API -> worker -> simulator, "
             f"{tp['concurrency']} clients, 50 ms WeChat latency (median of {tp['rounds']})",
             f"{tp['e2e_rate']:.0f} uploads/s (accepted at {tp['accept_rate']:.0f}/s; "
             f"{tp['statuses'].get('succeeded', 0)}/{tp['n'] * tp['rounds']} succeeded)",
             "all succeed", _verdict(tp["all_succeeded"])),
            (f"1. Direct loop: the same image posted to uploadimg, {tp['concurrency']} clients",
             f"{tp['direct_rate']:.0f} uploads/s", "", INFO),
            ("1. Ratio end-to-end / direct", f"{tp['ratio']:.2f}", ">= 0.8", _verdict(tp["ratio"] >= 0.8)),
            ("1. CPU per upload, end-to-end (direct loop)",
             ", ".join(f"{k} {v:.1f} ms" + (f" ({tp['direct_cpu'][k]:.1f})" if tp["direct_cpu"][k] >= 0.05 else "")
                       for k, v in tp["e2e_cpu"].items())
             + f"; total {sum(tp['e2e_cpu'].values()):.1f} ms ({sum(tp['direct_cpu'].values()):.1f}). "
             f"Ours (without other processes) {_ours(tp['e2e_cpu']):.1f} ms: a ratio of 0.8 needs "
             f"{0.8 * tp['direct_rate'] * _ours(tp['e2e_cpu']) / 1000:.1f} cores of this kind",
             "", INFO),
        ]
    sf = results.get("single_flight")
    if sf:
        out.append((
            f"2. api_authorizer_token calls: {sf['n']} concurrent uploads, expired token",
            f"{sf['calls']} ({sf['statuses'].get('succeeded', 0)}/{sf['n']} succeeded)",
            "= 1", _verdict(sf["calls"] == 1 and sf["all_succeeded"]),
        ))
    day = results.get("day")
    if day:
        out.append((
            f"2. Refreshes per authorizer over a simulated day (beat every 240 s + on-demand, "
            f"{day['authorizers']} authorizers)",
            f"max {day['max']}, min {day['min']} ({day['rejected_uploads']} of "
            f"{day['steps'] * day['authorizers']} uploads refused)",
            "<= 13", _verdict(day["max"] <= 13 and day["rejected_uploads"] == 0),
        ))
    q = results.get("queries")
    if q:
        sizes = q["sizes"]
        accept = [q["results"][s][0] for s in sizes]
        task = [q["results"][s][1] for s in sizes]
        label = " / ".join(f"{s:,}" for s in sizes)
        out += [
            (f"3. SQL queries per accepted upload (POST), at {label} uploads", " / ".join(map(str, accept)),
             "constant", _verdict(len(set(accept)) == 1)),
            (f"3. SQL queries per task run (upload_process), at {label} uploads", " / ".join(map(str, task)),
             "constant", _verdict(len(set(task)) == 1)),
        ]
    lat = results.get("latency")
    if lat:
        out += [
            (f"4. POST /api/v1/uploads/ latency, {lat['concurrency']} clients, {lat['n']} requests",
             f"p50 {lat['post_p50']:.1f} ms, p99 {lat['post_p99']:.1f} ms ({lat['post_rate']:.0f} req/s)", "", INFO),
            ("4. GET /healthz latency, same server and load (the floor)",
             f"p50 {lat['health_p50']:.1f} ms, p99 {lat['health_p99']:.1f} ms ({lat['health_rate']:.0f} req/s)",
             "", INFO),
        ]
    mem = results.get("memory")
    if mem:
        out.append((
            f"5. Worker RSS before -> after {mem['n']:,} uploads (0 ms latency)",
            f"{mem['before']:.1f} -> {mem['after']:.1f} MB (+{mem['growth']:.1f} MB; {mem['rate']:.0f} uploads/s)",
            "< 20 MB", _verdict(mem["growth"] < 20 and mem["statuses"].get("succeeded", 0) == mem["n"]),
        ))
    sr = results.get("refresh")
    if sr:
        out += [
            (f"6. Scheduled refresh of {sr['n']:,} due authorizers (worker, batches of 100)",
             f"{sr['seconds']:.1f} s, {sr['calls']:,} api_authorizer_token calls ({sr['failed']} failed)",
             f"= {sr['n']:,} calls", _verdict(sr["calls"] == sr["n"] and sr["failed"] == 0)),
            ("6. Second run (and a redelivered batch)",
             f"{sr['due2']} due, {sr['calls2']} calls; redelivered {sr['redelivered']:,} -> "
             f"{sr['calls_redelivered']} calls",
             "= 0", _verdict(sr["calls2"] == 0 and sr["calls_redelivered"] == 0)),
        ]
    return out


def table(results: dict) -> str:
    lines = ["| Measure | Result | Bar | Verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)]
    return "\n".join(lines)


def document(results: dict, machine: dict[str, str], setup: list[str], command: str) -> str:
    described = ", ".join(f"{k} {v}" for k, v in machine.items() if k != "date")
    parts = [
        "# Benchmark results",
        "",
        f"Measured {machine['date']} on {described}.",
        "",
        f"Reproduce with `{command}` (bench/run.py; docs/architecture.md §7 \"Bars\").",
        "",
        table(results),
        "",
        "Set-up: " + "; ".join(setup) + ".",
        "",
        "How to read it:",
        "",
        "- The direct loop and the end-to-end run share one client (20 `requests` sessions in the bench "
        "process, beside the simulator). End-to-end is CPU-bound wherever the machine has fewer cores than "
        "the CPU row asks for: the web server, the worker, PostgreSQL and Redis spend that much CPU per "
        "upload, the direct loop only the client's and the simulator's. `other processes` is CPU that "
        "anything else on the machine used meanwhile.",
        "- SQL counts are what Django logs (`BEGIN`/`COMMIT` included); the per-request and per-task "
        "connection health check (`SELECT 1`, `CONN_HEALTH_CHECKS`) bypasses that log and is not counted.",
        "- The simulated day moves our clock and the simulator's in 240 s steps, runs the beat job's logic "
        "(`authorizer_ids_due_for_refresh` + `authorizers_refresh`) and, for each authorizer, the on-demand "
        "path of an upload followed by a real uploadimg call with that token.",
        "- The scheduled refresh runs the batches `refresh_due_authorizer_tokens` sends (100 each), on the "
        "worker, without its 0-60 s jitter.",
        "",
    ]
    return "\n".join(parts)
