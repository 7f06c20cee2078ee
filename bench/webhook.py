"""Workload 1 (webhook) and 4 (connections): the product's webhook against the bare INSERT view, on the
same server process, under daphne and under uvicorn."""

import json
import subprocess
import sys
import time

from .endpoints import BARE_BEHIND_MIDDLEWARE_PATH, BARE_IN_FRONT_PATH, BARE_PATH
from .stack import BASE_DIR, WEBHOOK_SECRET, ConnectionSampler
from .stats import combine
from .traffic import distinct_update_ids, stream_from

POOL_MAX_SIZE = 10


def run_load(mode, spec, env=None):
    """Run the load generator process; its progress goes to our stderr, its result comes back as JSON."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", mode, json.dumps(spec)],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        check=True,
        timeout=spec.get("deadline_s", 300) + 60,
    )
    return json.loads(result.stdout)


def count_rows(stack):
    (messages, claims) = stack.sql(
        "SELECT (SELECT count(*) FROM tickets_message WHERE direction = 'in'), "
        "(SELECT count(*) FROM bots_telegramupdate WHERE kind <> 'bench')"
    )[0]
    return messages, claims


def webhook_spec(server, path, *, count, duplicates, seed, first_update_id, label, concurrency=32, customers=300):
    stream = {"kind": "webhook", "count": count, "customers": customers, "duplicate_share": duplicates}
    stream |= {"seed": seed, "first_update_id": first_update_id}
    return load_spec([f"{server.url}{path}"], stream, label=label, concurrency=concurrency)


def load_spec(targets, stream, *, label, concurrency, deadline_s=240):
    return {
        "targets": targets,
        "stream": stream,
        "secret": WEBHOOK_SECRET,
        "concurrency": concurrency,
        "deadline_s": deadline_s,
        "label": label,
    }


def measure(stack, server, spec):
    """One load against ``server``: the load's summary plus the server's CPU and the most PostgreSQL connections
    seen meanwhile (``connections_after`` adds those left once it idles)."""
    cpu_before = server.cpu_seconds()
    with ConnectionSampler(stack) as sampler:
        summary = run_load("webhook", spec)
    return _with_server_figures(summary, server.cpu_seconds() - cpu_before, max(sampler.samples, default=0))


def connections_after(stack):
    """PostgreSQL's connections to the database a moment after the load ended: what the server holds idle (its
    pool keeps its connections, up to its maximum, for ten minutes) and what a leak would have left. One count
    per server process: every side measured on it shares its pool."""
    time.sleep(2)
    return stack.sql(ConnectionSampler.QUERY, [stack.database])[0][0]


def measure_in_turns(stack, server, specs, *, rounds, progress):
    """The loads of ``specs`` ({side: load spec}) against ``server``, each cut into ``rounds`` parts sent in
    turns, ABBA (A B, B A, A B...): a drift in the machine's speed while they run (the machine is shared)
    then weighs on every side alike, and the ratio of their rates is fair. Per side, ``measure``'s figures
    for the whole load, and each round's rate."""
    parts = {side: [] for side in specs}
    for number in range(rounds):
        for side in list(specs) if number % 2 == 0 else list(reversed(specs)):
            spec = specs[side]
            count = spec["stream"]["count"]
            part = [count * number // rounds, count * (number + 1) // rounds]
            label = f"{spec['label']} (round {number + 1} of {rounds})"
            progress(f"webhook: {label}, requests {part[0]}-{part[1]}")
            parts[side].append(measure(stack, server, {**spec, "part": part, "label": label}))
    combined = {}
    for side, measured in parts.items():
        summary = combine(measured)
        cpu = sum(part["server_cpu_s"] for part in measured)
        connections = max(part["pg_connections_max"] for part in measured)
        combined[side] = _with_server_figures(summary, cpu, connections)
        combined[side]["per_second_by_round"] = [part["per_second"] for part in measured]
    return combined


def _with_server_figures(summary, cpu, connections_max):
    return summary | {
        "server_cpu_s": round(cpu, 2),
        "cpu_ms_per_request": round(cpu * 1000 / summary["requests"], 2) if summary["requests"] else None,
        "cores_used": round(cpu / summary["seconds"], 2) if summary["seconds"] else None,
        "pg_connections_max": connections_max,
    }


def run(stack, *, counts, rounds, progress):
    """``counts``: {server kind: requests per endpoint}, sent in ``rounds`` turns (measure_in_turns)."""
    results = {}
    for number, (kind, count) in enumerate(counts.items()):
        stack.reset_data()
        progress(f"webhook: starting {kind}")
        server = stack.start_server(kind, DATABASE_POOL_MAX_SIZE=POOL_MAX_SIZE)
        base = (number + 1) * 10_000_000
        # Warm-up: the bot's Application initialises, the pool fills, code paths load.
        warmup = webhook_spec(
            server,
            "/telegram/webhook/",
            count=min(200, count // 5),
            duplicates=0,
            seed=1,
            first_update_id=base,
            label=f"{kind} warm-up",
            customers=50,
        )
        run_load("webhook", warmup)
        for offset, path in enumerate((BARE_PATH, BARE_IN_FRONT_PATH)):
            bare_warmup = {**warmup, "targets": [f"{server.url}{path}"], "label": f"{kind} bare warm-up"}
            bare_warmup["stream"] = {**warmup["stream"], "first_update_id": base + (offset + 1) * 500_000}
            run_load("webhook", bare_warmup)

        ours_spec = webhook_spec(
            server,
            "/telegram/webhook/",
            count=count,
            duplicates=0.1,
            seed=number + 2,
            first_update_id=base + 1_000_000,
            label=f"{kind} webhook",
        )
        bare_spec = webhook_spec(
            server,
            BARE_PATH,
            count=count,
            duplicates=0,
            seed=number + 2,
            first_update_id=base + 2_000_000,
            label=f"{kind} bare view",
        )
        in_front_spec = {**bare_spec, "targets": [f"{server.url}{BARE_IN_FRONT_PATH}"]}
        in_front_spec |= {"label": f"{kind} bare view in front of Django"}
        in_front_spec["stream"] = {**bare_spec["stream"], "first_update_id": base + 3_000_000}
        progress(
            f"webhook: {count} updates (10% duplicates) to {kind}, in turns with the bare view through Django's "
            "request cycle and in front of it"
        )
        messages_before, claims_before = count_rows(stack)
        specs = {"ours": ours_spec, "bare": bare_spec, "bare_in_front": in_front_spec}
        sides = measure_in_turns(stack, server, specs, rounds=rounds, progress=progress)
        ours = sides["ours"]
        messages_after, claims_after = count_rows(stack)
        ours["distinct_updates"] = len(distinct_update_ids(stream_from(ours_spec["stream"])))
        # Under a deadline some updates may not have been sent, and a 5xx stores nothing (G3): the updates
        # that must be stored are those answered 2xx.
        ours["messages_stored"] = messages_after - messages_before
        ours["claims_stored"] = claims_after - claims_before

        results[kind] = {**sides, "pool_max_size": POOL_MAX_SIZE}
        if kind == "daphne":
            # The earliest baseline: the same view behind the browser middleware, as every view was served at first.
            progress(f"webhook: {count} requests to the bare INSERT view behind the browser middleware on {kind}")
            behind = {**bare_spec, "targets": [f"{server.url}{BARE_BEHIND_MIDDLEWARE_PATH}"], "label": "behind"}
            behind["stream"] = {**bare_spec["stream"], "first_update_id": base + 4_000_000}
            results[kind]["bare_behind_middleware"] = measure(stack, server, behind)
        after = connections_after(stack)
        for side in (*specs, "bare_behind_middleware"):
            if side in results[kind]:
                results[kind][side]["pg_connections_after"] = after
        stack.stop(server)
    return results
