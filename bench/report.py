"""One markdown table for every bar, with the machine's load beside each figure, plus the machine it ran on.

A performance figure gets no verdict on a loaded machine: when, in the 5 s before the bench started
anything, the machine was busy more than LOADED_CORES (10 % of one core), or when, during the figure's
scenario, processes that are not the bench's (`other processes`) plus the CPU stolen by the hypervisor
averaged more than that. Counts (token calls, SQL queries, memory growth) and "every upload succeeded"
do not depend on the load and are judged anyway.
"""

from __future__ import annotations

from bench.scenarios import BASELINE, OURS

PASS, FAIL, INFO = "pass", "**FAIL**", "reported"
NO_VERDICT = "no verdict (loaded machine)"
#: Cores of CPU not ours above which the machine counts as loaded (this kind has 2).
LOADED_CORES = 0.10

Row = tuple[str, str, str, str, str]


def _verdict(ok: bool) -> str:
    return PASS if ok else FAIL


def _ms(cpu: dict[str, float], parts: tuple[str, ...]) -> str:
    return ", ".join(f"{k} {cpu[k]:.1f}" for k in parts if k in cpu)


def scenario_loaded(result: dict, machine_load: dict) -> bool:
    load = result.get("load") or {}
    return (machine_load["probe_cores"] > LOADED_CORES
            or load.get("other_cores", 0.0) + load.get("steal_cores", 0.0) > LOADED_CORES)


def _load_cell(result: dict) -> str:
    load = result.get("load")
    if not load:
        return ""
    cell = f"{load['before']:.1f} → {load['after']:.1f}; others {load['other_cores']:.0%} of a core"
    if load["steal_cores"] >= 0.005:
        cell += f", stolen {load['steal_cores']:.0%}"
    if load.get("checkpoints"):
        cell += f"; PostgreSQL checkpoints: {load['checkpoints']}"
    return cell


def rows(results: dict, machine_load: dict) -> list[Row]:
    out: list[Row] = []

    def add(name: str, items: list[tuple[str, str, str, str | bool | None]]) -> None:
        """Rows of scenario `name`: a verdict given as True/False is a performance bar (none when the
        machine was loaded); a string is final (a count, or a failure whatever the load)."""
        result = results[name]
        loaded = scenario_loaded(result, machine_load)
        cell = _load_cell(result)
        for measure, value, bar, verdict in items:
            if isinstance(verdict, bool):
                verdict = NO_VERDICT if loaded else _verdict(verdict)
            out.append((measure, value, bar, verdict or INFO, cell))

    tp = results.get("throughput")
    if tp:
        e2e, base, direct = tp["e2e_cpu"], tp["baseline_cpu"], tp["direct_cpu"]
        ours, minimal = tp["ours_total"], tp["baseline_total"]
        all_ok = tp["all_succeeded"]
        failed = None if all_ok else FAIL
        rounds = f"median of {tp['rounds']}"

        def times(part: str) -> str:
            return f"{tp['cpu_ratio_parts'][part]:.1f} × the minimal task's total"

        add("throughput", [
            (f"1. (a) CPU per upload, ours in total: {' + '.join(OURS)}, end to end, {tp['concurrency']} clients, "
             f"50 ms ({rounds})",
             f"{ours:.1f} ms ({_ms(e2e, OURS)}); {tp['cpu_ratio']:.1f} × the minimal task", "≤ 12 ms", failed or ours <= 12),
            ("1. (a) CPU per upload, web (accept: the JPEG checked, the record, the task sent)",
             f"{e2e['web']:.1f} ms ({times('web')})", "≤ 6 ms", e2e["web"] <= 6),
            ("1. (a) CPU per upload, worker (the task)",
             f"{e2e['worker']:.1f} ms ({times('worker')}; the minimal task's worker "
             f"{base['minimal task worker']:.1f} ms)", "≤ 3.5 ms", e2e["worker"] <= 3.5),
            ("1. (a) CPU per upload, PostgreSQL", f"{e2e['PostgreSQL']:.1f} ms ({times('PostgreSQL')})",
             "≤ 2.5 ms", e2e["PostgreSQL"] <= 2.5),
            ("1. (a) CPU per upload, Redis (broker, throttle counters)",
             f"{e2e['Redis']:.1f} ms ({times('Redis')}; the minimal task's {base['Redis']:.1f} ms)", "", None),
            ("1. (a) The minimal Celery task (bench/baseline.py): Redis GET + one `requests` POST to uploadimg, "
             f"threads × {tp['concurrency']}, nothing recorded ({rounds})",
             f"{minimal:.1f} ms per upload ({_ms(base, BASELINE)}; the bench process is its producer: "
             f"SET + apply_async); {tp['baseline_rate']:.0f} uploads/s", "", None),
            ("1. (a) Ratio ours / the minimal task, CPU per upload in total, every record kept",
             f"{tp['cpu_ratio']:.1f} ×", "≤ 3.3 ×", failed or tp["cpu_ratio"] <= 3.3),
            ("1. (a) CPU per upload outside ours (end to end; the direct loop's in brackets)",
             f"bench process (clients) {e2e['bench process']:.1f} ({direct['bench process']:.1f}), simulator "
             f"{e2e['simulator']:.1f} ({direct['simulator']:.1f}), kernel threads {e2e['kernel']:.1f} "
             f"({direct['kernel']:.1f}), other processes {e2e['other processes']:.1f} "
             f"({direct['other processes']:.1f}) ms. At {ours:.1f} ms, 140 uploads/s need "
             f"{140 * ours / 1000:.1f} cores for ours alone", "", None),
            (f"1. (b) End-to-end throughput: {tp['n']} uploads, API -> worker -> simulator, "
             f"{tp['concurrency']} clients, 50 ms WeChat latency ({rounds})",
             f"{tp['e2e_rate']:.0f} uploads/s (accepted at {tp['accept_rate']:.0f}/s; "
             f"{tp['statuses'].get('succeeded', 0)}/{tp['n'] * tp['rounds']} succeeded)",
             "≥ 140 uploads/s, all succeed", failed or tp["e2e_rate"] >= 140),
            (f"1. (b) Direct loop: the same image posted to uploadimg, {tp['concurrency']} clients",
             f"{tp['direct_rate']:.0f} uploads/s (at most {tp['concurrency'] / 0.05:.0f}/s at 50 ms); the minimal "
             f"task {tp['baseline_rate']:.0f}/s", "", None),
            ("1. (b) Ratio end-to-end / direct", f"{tp['ratio']:.2f}", "", None),
        ])
    two = results.get("two_clients")
    if two:
        add("two_clients", [
            (f"1. Two clients, {two['worker']}, 50 ms, {two['n']} uploads (median of {two['rounds']})",
             f"{two['e2e_rate']:.1f} uploads/s end to end ({two['statuses'].get('succeeded', 0)}/"
             f"{two['n'] * two['rounds']} succeeded); direct loop at 2: {two['direct_rate']:.1f}/s "
             f"(at most 40/s); worker {two['e2e_cpu']['worker']:.1f} ms CPU per upload", "", None),
            ("1. Ratio two clients end-to-end / direct loop at concurrency 2", f"{two['ratio']:.2f}", "≥ 0.88",
             FAIL if not two["all_succeeded"] else two["ratio"] >= 0.88),
        ])
    dr = results.get("drain")
    if dr:
        add("drain", [
            (f"1. (c) Drain: {dr['n']:,} queued uploads, one worker process {dr['worker']}, "
             f"{dr['latency_ms']:.0f} ms WeChat latency (median of {dr['rounds']})",
             f"{dr['drain_rate']:.0f} uploads/s, first claim to last result ({dr['wall_rate']:.0f}/s from "
             f"add_consumer to the last poll); {dr['statuses'].get('succeeded', 0)}/{dr['n'] * dr['rounds']} "
             f"succeeded; worker {dr['cpu']['worker']:.1f} ms CPU per upload", "", None),
            (f"1. (c) Direct loop: {dr['n']:,} uploadimg posts, {dr['in_flight']} in flight",
             f"{dr['direct_rate']:.0f} uploads/s (at most {dr['in_flight'] / dr['latency_ms'] * 1000:.0f}/s)",
             "", None),
            ("1. (c) Ratio drain / direct", f"{dr['ratio']:.2f}", "≥ 0.8",
             FAIL if not dr["all_succeeded"] else dr["ratio"] >= 0.8),
        ])
    sf = results.get("single_flight")
    if sf:
        add("single_flight", [(
            f"2. api_authorizer_token calls: {sf['n']} concurrent uploads, expired token",
            f"{sf['calls']} ({sf['statuses'].get('succeeded', 0)}/{sf['n']} succeeded)",
            "= 1", _verdict(sf["calls"] == 1 and sf["all_succeeded"]),
        )])
    day = results.get("day")
    if day:
        add("day", [(
            f"2. Refreshes per authorizer over a simulated day (beat every 240 s + on-demand, "
            f"{day['authorizers']} authorizers)",
            f"max {day['max']}, min {day['min']} ({day['rejected_uploads']} of "
            f"{day['steps'] * day['authorizers']} uploads refused)",
            "<= 13", _verdict(day["max"] <= 13 and day["rejected_uploads"] == 0),
        )])
    q = results.get("queries")
    if q:
        sizes = q["sizes"]
        accept = [q["results"][s][0] for s in sizes]
        task = [q["results"][s][1] for s in sizes]
        label = " / ".join(f"{s:,}" for s in sizes)
        add("queries", [
            (f"3. SQL queries per accepted upload (POST), at {label} uploads", " / ".join(map(str, accept)),
             "constant", _verdict(len(set(accept)) == 1)),
            (f"3. SQL queries per task run (upload_process), at {label} uploads", " / ".join(map(str, task)),
             "constant", _verdict(len(set(task)) == 1)),
        ])
    lat = results.get("latency")
    if lat:
        rounds = lat.get("rounds", 1)
        each = f" (median of {rounds})" if rounds > 1 else ""
        add("latency", [
            (f"4. (d) POST /api/v1/uploads/ latency, {lat['concurrency']} clients, {lat['n']} requests{each}",
             f"p50 {lat['post_p50']:.1f} ms, p99 {lat['post_p99']:.1f} ms ({lat['post_rate']:.0f} req/s)", "", None),
            (f"4. (d) GET /healthz latency, {lat['concurrency']} clients on the same server, alone (the floor){each}",
             f"p50 {lat['health_p50']:.1f} ms, p99 {lat['health_p99']:.1f} ms ({lat['health_rate']:.0f} req/s)",
             "", None),
            (f"4. (d) Ratio POST p99 / healthz p99{' (per round, then the median)' if rounds > 1 else ''}",
             f"{lat['p99_ratio']:.1f} ×" + (" (rounds: " + ", ".join(f"{r:.1f}" for r in lat["p99_ratios"]) + ")"
                                            if len(lat.get("p99_ratios", ())) > 1 else ""),
             "≤ 3 ×", lat["p99_ratio"] <= 3),
        ])
        if "probe_p99" in lat:  # what any request meets beside the POST load (docs/architecture.md §7)
            add("latency", [
                (f"4. (d) GET /healthz from one more client during the POST load (every "
                 f"{lat['probe_pause_ms']:.0f} ms; {lat['probe_n']} probes){each}",
                 f"p50 {lat['probe_p50']:.1f} ms, p99 {lat['probe_p99']:.1f} ms", "", None),
                ("4. (d) Ratio POST p99 / that healthz p99", f"{lat['probe_ratio']:.1f} ×", "", None),
            ])
        if "client_heaviest" in lat:  # the web processes' uneven share of the connections (docs/architecture.md §7)
            add("latency", [
                (f"4. (d) POST latency of each client (its mean), the lightest and the heaviest of the "
                 f"{lat['concurrency']}{each}",
                 f"{lat['client_lightest']:.0f} / {lat['client_heaviest']:.0f} ms "
                 f"({lat['client_heaviest'] / lat['client_lightest']:.1f} ×)", "", None),
            ])
    mem = results.get("memory")
    if mem:
        add("memory", [(
            f"5. (e) Worker RSS before -> after {mem['n']:,} uploads ({mem['worker']}, 0 ms latency)",
            f"{mem['before']:.1f} -> {mem['after']:.1f} MB (+{mem['growth']:.1f} MB; {mem['rate']:.0f} uploads/s)",
            "< 20 MB", _verdict(mem["growth"] < 20 and mem["statuses"].get("succeeded", 0) == mem["n"]),
        )])
    sr = results.get("refresh")
    if sr:
        add("refresh", [
            (f"6. Scheduled refresh of {sr['n']:,} due authorizers (worker, batches of 100)",
             f"{sr['seconds']:.1f} s, {sr['calls']:,} api_authorizer_token calls ({sr['failed']} failed)",
             f"= {sr['n']:,} calls", _verdict(sr["calls"] == sr["n"] and sr["failed"] == 0)),
            ("6. Second run (and a redelivered batch)",
             f"{sr['due2']} due, {sr['calls2']} calls; redelivered {sr['redelivered']:,} -> "
             f"{sr['calls_redelivered']} calls",
             "= 0", _verdict(sr["calls2"] == 0 and sr["calls_redelivered"] == 0)),
        ])
    return out


def table(results: dict, machine_load: dict) -> str:
    lines = ["| Measure | Result | Bar | Verdict | Load: 1-min average before → after; CPU not ours |",
             "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows(results, machine_load)]
    return "\n".join(lines)


def machine_line(results: dict, machine_load: dict) -> str:
    """Whether the machine was quiet, and the figures that say so."""
    before = (f"before the bench started anything, the 1-minute load average was {machine_load['load_before']:.2f} "
              f"and the machine busy {machine_load['probe_cores']:.2f} cores over {machine_load['probe_seconds']:.0f} s")
    loaded = [name for name, result in results.items() if scenario_loaded(result, machine_load)]
    if machine_load["probe_cores"] > LOADED_CORES:
        return (f"**Loaded machine**: {before} (over {LOADED_CORES:.2f}): no performance figure of this run gets a "
                "verdict.")
    if loaded:
        return (f"**Loaded machine** during {', '.join(loaded)}: other processes (and the hypervisor) took over "
                f"{LOADED_CORES:.0%} of a core there; performance figures measured there get no verdict; {before}.")
    return (f"Quiet machine: {before}; during every scenario, processes not the bench's took at most "
            f"{LOADED_CORES:.0%} of a core.")


def document(results: dict, machine: dict[str, str], setup: list[str], command: str, machine_load: dict) -> str:
    described = ", ".join(f"{k} {v}" for k, v in machine.items() if k != "date")
    parts = [
        "# Benchmark results",
        "",
        f"Measured {machine['date']} on {described}.",
        "",
        machine_line(results, machine_load) + f" 1-minute load average {machine_load['load_after']:.1f} at the end.",
        "",
        f"Reproduce with `{command}` (bench/run.py; docs/architecture.md §7 \"Bars\", issue 10).",
        "",
        table(results, machine_load),
        "",
        "Set-up: " + "; ".join(setup) + ".",
        "",
        "How to read it:",
        "",
        "- Ours, the minimal task and the direct loops run in the same run, on the same machine, in "
        "alternation: each round runs the direct loop, then (for throughput) the minimal task, ours, and the "
        "minimal task again; the key figures are the median of the rounds (`--quick`: one round).",
        "- CPU per upload is user + system time from /proc, per process, over the window of each run divided "
        "by its uploads. Ours: `web` (gunicorn and its workers), `worker` (the Celery worker of uploads), "
        "`PostgreSQL` (the backends on the bench database and the server's background processes: WAL, "
        "checkpoints), `Redis` (the whole server). The minimal task's: its worker, Redis and the bench process "
        "(its producer: SET of the bytes, apply_async). Outside ours: the bench process (the load clients) and "
        "`simulator` (WeChat, a process of its own), and the kernel's threads; `other processes` is whatever "
        "else the machine ran (user-space processes not the bench's).",
        "- The minimal task (bench/baseline.py) keeps nothing: no record, no lease, no retry, no result. "
        "The bar is ours ≤ 3.3 × its CPU per upload with every record kept. Each \"× the minimal task\" is "
        "taken per round, against the mean of the minimal task's two runs just before and just after ours "
        "(this machine kind's speed drifts within seconds: a drift that is steady over the round cancels), "
        "and the median of the rounds is shown; the milliseconds are each the median of the rounds.",
        "- A direct loop posts the same image to uploadimg from the bench process, with the same number in "
        "flight and the same latency: the ceiling of the set-up (in flight / latency) minus what the bench "
        "process and the simulator can do on this machine.",
        "- The load clients are threads of the bench process, each with its own kept-alive connection, speaking "
        "HTTP/1.1 through `http.client` (bench/load.py): about a quarter of the CPU per 90 KB POST that "
        "`requests` takes, on the cores the service is measured on.",
        "- Throughput and the two clients: the clients POST as fast as they are accepted, then the bench polls "
        "until every upload is final; the rate is uploads / (first POST to all final).",
        "- Latency: after 100 untimed POSTs (a fresh web process's first requests pay its imports), each round "
        "runs `/healthz` alone under the 20 clients (the floor), then the POSTs under 20 clients with one more "
        "client asking `/healthz` beside them, and waits until every upload is final; the p99 ratio is taken "
        "per round and its median shown (the p99 of 1,000 requests rests on its 10 slowest). A client keeps "
        "its connection and the connection stays with the web process that accepted it; the lightest and "
        "heaviest client's mean latency show how unevenly the processes share the clients (docs/architecture.md "
        "§7, \"Connections are shared unevenly\").",
        "- The drain: the uploads are written in bulk as the API would have accepted them (records, bytes, "
        "one task each) while no worker consumes `uploads`; one worker process, started on an idle queue, "
        "is then told to consume it (`add_consumer`). Its rate is uploads / (its first claim to its last "
        "result, the records' `started_at` and `finished_at`); from `add_consumer` to the poll (a COUNT "
        "every 0.2 s) that saw none left is shown too (a Redis worker notices a new queue within its 1 s poll).",
        "- Load: the line above the table gives the 1-minute load average and how busy the machine was over "
        "5 s before the bench started anything. Each row gives the load average before and after its scenario "
        "(the bench's own processes raise it: it says little about anyone else) and the CPU not ours meanwhile "
        "(other processes, and time stolen by the hypervisor) as a share of one core. Over "
        f"{LOADED_CORES:.0%} of one core in either, the performance rows say \"no verdict (loaded machine)\"; "
        "counts, and whether every upload succeeded, are judged anyway. A row also says how many PostgreSQL "
        "checkpoints fell inside its scenario: the checkpointer's writes, and the full-page images in the WAL "
        "after it, count as PostgreSQL's CPU, which a scenario without one does not pay (a full run writes "
        "about 1 GB of WAL: 90 KB of image per upload).",
        "- SQL counts are what Django logs (`BEGIN`/`COMMIT` included). The connection's health check "
        "(`CONN_HEALTH_CHECKS`) is the first of these statements on the upload path "
        "(`openplatform.core.sql.execute(health_check=True)`): no `SELECT 1` is sent before it.",
        "- The simulated day moves our clock and the simulator's in 240 s steps, runs the beat job's logic "
        "(`authorizer_ids_due_for_refresh` + `authorizers_refresh`) and, for each authorizer, the on-demand "
        "path of an upload followed by a real uploadimg call with that token. WeChat's clock stays a day ahead "
        "afterwards, so the day ends with a new ticket and a forced component token refresh: the scheduled "
        "refresh after it counts only authorizer refreshes.",
        "- The scheduled refresh runs the batches `refresh_due_authorizer_tokens` sends (100 each), on the "
        "worker, without its 0-60 s jitter.",
        "",
    ]
    return "\n".join(parts)

