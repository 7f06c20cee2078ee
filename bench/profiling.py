"""Profiles: py-spy samples of a live process under load, and database round trips per update.

``summarize_collapsed`` turns py-spy's collapsed stacks into the text committed under bench/profiles/;
``count_round_trips`` reads libpq protocol traces (bench.apps) into round trips and statements.
"""

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import sqlparse

THREAD_FRAME = re.compile(r"^thread \((0x[0-9a-fA-F]+|\d+)\)(?:: (.*))?")
# asyncio's and asgiref's executors name their threads ThreadPoolExecutor-<pool number>_<thread number>.
EXECUTOR_THREAD = re.compile(r"ThreadPoolExecutor-(\d+)_\d+")
PY_SPY = Path(sys.executable).with_name("py-spy")


class Recording:
    """``py-spy record`` of one process, from ``start()`` until ``stop()``, as collapsed stacks."""

    def __init__(self, process, output, rate=250, idle=False):
        self.process = process
        self.output = Path(output)
        self.rate = rate
        self.idle = idle
        self.popen = None

    def start(self):
        args = [str(PY_SPY), "record", "--pid", str(self.process.pid), "--rate", str(self.rate), "--threads"]
        # --gil: only the thread holding the GIL, i.e. where the process's Python CPU time goes;
        # --idle: every thread, waiting included, i.e. where its wall-clock time goes.
        args += ["--idle"] if self.idle else ["--gil"]
        args += ["--nonblocking", "--format", "raw", "--output", str(self.output)]
        self.popen = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def stop(self):
        self.popen.send_signal(signal.SIGINT)
        _, errors = self.popen.communicate(timeout=60)
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {errors.decode(errors='replace')}")
        return self.output.read_text()


def parse_collapsed(text):
    """(stack frames, count) per line of py-spy's raw output."""
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def function_of(frame):
    """``name (path/to/module.py:123)`` → ``name (module.py)``: lines differ, functions add up."""
    name, _, location = frame.partition(" (")
    path = location.rsplit(":", 1)[0].rstrip(")")
    for marker in ("site-packages/", "/lib/python3.11/", "/work/wt/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name


def summarize_collapsed(text, *, requests=None, thread=None, top=30):
    """The profile as text: samples, threads seen (by name, numbers folded), and the functions by inclusive
    and by self share — of every thread, or of the threads whose name matches the pattern ``thread`` only."""
    total, threads, pools = 0, set(), set()
    names = {}
    inclusive, own = Counter(), Counter()
    for frames, count in parse_collapsed(text):
        if frames and (match := THREAD_FRAME.match(frames[0])):
            threads.add(match.group(1))
            name = match.group(2) or "(unnamed)"
            names.setdefault(re.sub(r"\d+", "N", name), set()).add(match.group(1))
            if pool := EXECUTOR_THREAD.search(name):
                pools.add(int(pool.group(1)))
            if thread is not None and not re.fullmatch(thread, name):
                continue
        calls = [function_of(frame) for frame in frames if not THREAD_FRAME.match(frame) and " (" in frame]
        if not calls:
            continue
        total += count
        own[calls[-1]] += count
        for function in set(calls):
            inclusive[function] += count
    by_name = ", ".join(f"{name} {len(ids)}" for name, ids in sorted(names.items(), key=lambda item: -len(item[1])))
    lines = [
        f"samples{f' of {thread}' if thread else ''}: {total}",
        f"distinct threads seen: {len(threads)} ({by_name})",
    ]
    if requests:
        lines.append(f"requests during the recording: {requests}")
    if pools:
        # Each pool was started for one thread-sensitive context; the numbers in between were too.
        started = max(pools) - min(pools) + 1
        per_request = f", {started / requests:.2f} per request" if requests else ""
        lines.append(f"thread pools started during the recording (from their names): {started}{per_request}")
    for title, counter in (("inclusive (function on the stack)", inclusive), ("self (function at the top)", own)):
        lines += ["", f"--- top {top} by {title}, % of samples"]
        lines += [f"{100 * count / total:6.1f}%  {function}" for function, count in counter.most_common(top)]
    return "\n".join(lines) + "\n"


def count_round_trips(trace_texts):
    """Round trips (one per ReadyForQuery), transactions (each ends in COMMIT or ROLLBACK) and statements by
    first word, over libpq protocol traces; each statement of a query of several counts."""
    round_trips, transactions = 0, 0
    statements = Counter()
    for text in trace_texts:
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) < 3:
                continue
            direction, message = parts[0], parts[2]
            if direction == "B" and message == "ReadyForQuery":
                round_trips += 1
            elif direction == "F" and message in ("Query", "Parse"):
                sql = parts[3].strip() if len(parts) > 3 else ""
                if message == "Parse":
                    sql = sql.split('" "', 1)[1] if '" "' in sql else sql
                # A query of several statements (tickets.services.rows.in_turn) counts each; "" is one statement.
                for statement in sqlparse.split(sql.strip('" ')) or [""]:
                    word = statement.split(" ", 1)[0].upper() or "(empty: the pool's health check)"
                    statements[word] += 1
                    transactions += word in ("COMMIT", "ROLLBACK")  # a redelivery's ends in ROLLBACK
    return {"round_trips": round_trips, "transactions": transactions, "statements": dict(statements.most_common())}


def _trace_offsets(trace_dir):
    return {path: path.stat().st_size for path in trace_dir.glob("*.trace")}


def _trace_tails(trace_dir, offsets):
    tails = []
    for path in trace_dir.glob("*.trace"):
        with path.open() as trace:
            trace.seek(offsets.get(path, 0))
            tails.append(trace.read())
    return tails


def round_trips_per_update(stack, *, count, progress):
    """Database round trips of a new customer's first message (with its automatic reply), of a known
    customer's message, and of a redelivery, from libpq traces of a live daphne."""
    from .traffic import FIRST_USER_ID
    from .webhook import load_spec, run_load, webhook_spec

    trace_dir = stack.run_dir / "pg-trace"
    trace_dir.mkdir(exist_ok=True)
    server = stack.start_server("daphne", name="daphne-traced", BENCH_PG_TRACE_DIR=trace_dir)
    path = "/telegram/webhook/"
    run_load("webhook", webhook_spec(server, path, count=200, duplicates=0, seed=1, first_update_id=1, label="warm-up"))
    # Customers the warm-up did not meet: each writes once in the first load, and again in the second.
    customers = {"customers": count, "first_user_id": FIRST_USER_ID + 1_000_000}
    first_messages = {"kind": "conversation", "per_customer": 1, "duplicate_share": 0, "seed": 7, **customers}
    known = {"kind": "webhook", "count": count, "duplicate_share": 0, "seed": 7, **customers}
    loads = (
        ("new customer", {**first_messages, "first_update_id": 10_000}),
        ("known customer", {**known, "first_update_id": 20_000}),
        ("duplicate", {**known, "first_update_id": 20_000}),
    )
    results = {}
    for kind, stream in loads:
        progress(f"round trips: {count} updates ({kind}) through a traced daphne")
        offsets = _trace_offsets(trace_dir)
        load = run_load("webhook", load_spec([f"{server.url}{path}"], stream, label=kind, concurrency=32))
        counts = count_round_trips(_trace_tails(trace_dir, offsets))
        counts["updates"] = load["requests"]
        counts["round_trips_per_update"] = round(counts["round_trips"] / load["requests"], 2)
        counts["statements_per_update"] = {
            word: round(number / load["requests"], 2) for word, number in counts["statements"].items()
        }
        results[kind] = counts
    stack.stop(server)
    return results


def profile_webhook(stack, *, count, name, progress):
    """Sample a daphne serving ``count`` updates (10% duplicates) with py-spy, then the same process serving as
    many requests to the bare INSERT view; write both, with the round trips, to bench/profiles/<name>.txt."""
    from .endpoints import BARE_PATH
    from .webhook import run_load, webhook_spec

    stack.reset_data()
    trips = round_trips_per_update(stack, count=300 if count >= 3000 else 150, progress=progress)
    stack.reset_data()
    server = stack.start_server("daphne", name="daphne-profiled")
    path = "/telegram/webhook/"
    run_load("webhook", webhook_spec(server, path, count=200, duplicates=0, seed=1, first_update_id=1, label="warm-up"))
    progress(f"profile: py-spy on daphne while it serves {count} updates")
    recording = Recording(server, stack.run_dir / f"{name}.collapsed").start()
    spec = webhook_spec(server, path, count=count, duplicates=0.1, seed=3, first_update_id=100_000, label="profiled")
    load = run_load("webhook", spec)
    collapsed = recording.stop()
    progress(f"profile: py-spy on the same daphne while it serves {count} requests to the bare INSERT view")
    bare_recording = Recording(server, stack.run_dir / f"{name}-bare.collapsed").start()
    bare_spec = webhook_spec(server, BARE_PATH, count=count, duplicates=0, seed=3, first_update_id=1, label="bare")
    bare_load = run_load("webhook", bare_spec)
    bare_collapsed = bare_recording.stop()
    stack.stop(server)
    text = [
        f"# py-spy ({recording.rate} Hz, --gil --nonblocking) of one daphne process serving {load['requests']} webhook "
        f"updates (10% duplicates) at 32 connections: {load['per_second']} updates/s, p50 {load['p50_ms']} ms, "
        f"p99 {load['p99_ms']} ms (with the profiler attached).",
        "",
        "## Database round trips per update (libpq protocol trace; one per ReadyForQuery)",
    ]
    for kind, counts in trips.items():
        text.append(
            f"{kind}: {counts['round_trips_per_update']} round trips, statements per update: "
            + ", ".join(f"{word} {number}" for word, number in counts["statements_per_update"].items())
        )
    text += ["", "## Samples", summarize_collapsed(collapsed, requests=load["requests"])]
    text += [
        f"## Samples of the bare INSERT view on the same process: {bare_load['requests']} requests, "
        f"{bare_load['per_second']} requests/s (with the profiler attached)",
        summarize_collapsed(bare_collapsed, requests=bare_load["requests"]),
    ]
    output = Path(__file__).with_name("profiles") / f"{name}.txt"
    output.write_text("\n".join(text))
    progress(f"profile: wrote {output}")
    return {"round_trips": trips, "load": load, "bare_load": bare_load, "profile": str(output)}


def profile_status(stack, *, count, name, progress):
    """Sample a daphne serving ``count`` /status updates (10% duplicates), each answered by the bot: what an
    update of the whole machine's workload costs the server; write it to bench/profiles/<name>.txt."""
    from .webhook import load_spec, run_load

    stack.reset_data()
    server = stack.start_server("daphne", name="daphne-status-profiled")

    def spec(first_id, customers, per_customer, duplicates, label):
        stream = {"kind": "conversation", "customers": customers, "per_customer": per_customer, "seed": 13}
        stream |= {"duplicate_share": duplicates, "first_update_id": first_id, "first_user_id": first_id}
        return load_spec([f"{server.url}/telegram/webhook/"], stream, label=label, concurrency=32)

    run_load("webhook", spec(1_000_000, 50, 4, 0, "warm-up"))
    per_customer = max(1, round(count / 1.1 / 300))
    progress(f"profile: py-spy on daphne while it serves {count} /status updates")
    recording = Recording(server, stack.run_dir / f"{name}.collapsed").start()
    cpu_before = server.cpu_seconds()
    load = run_load("webhook", spec(2_000_000, 300, per_customer, 0.1, "profiled /status"))
    cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / load["requests"]
    collapsed = recording.stop()
    stack.stop(server)
    text = [
        f"# py-spy ({recording.rate} Hz, --gil --nonblocking) of one daphne process serving {load['requests']} "
        f"/status updates (10% duplicates), each answered by the bot, at 32 connections: {load['per_second']} "
        f"updates/s, p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms, {cpu_ms:.2f} ms of the server's CPU per "
        "update (with the profiler attached).",
        "",
        summarize_collapsed(collapsed, requests=load["requests"], top=40),
    ]
    output = Path(__file__).with_name("profiles") / f"{name}.txt"
    output.write_text("\n".join(text))
    progress(f"profile: wrote {output}")
    return {"load": load, "server_cpu_ms_per_update": round(cpu_ms, 2), "profile": str(output)}


def profile_worker(stack, *, name, progress):
    """Sample the one worker of the first-contact burst (wall clock, idle included: where it waits), then the
    same replies as a backlog the worker drains alone (its GIL: where its CPU goes); count its database round
    trips per reply sent in each."""
    from .machine import first_contact_burst, queued_backlog

    def recorder(label, idle):
        return lambda worker: Recording(worker, stack.run_dir / f"{name}-{label}.collapsed", idle=idle)

    def traced(label):
        trace_dir = stack.run_dir / f"pg-trace-{label}"
        trace_dir.mkdir(exist_ok=True)
        return trace_dir, {"BENCH_PG_TRACE_DIR": trace_dir}

    def round_trips(trace_dir, sent):
        trips = count_round_trips(_trace_tails(trace_dir, {}))
        per_reply = ", ".join(f"{word} {number / sent:.2f}" for word, number in trips["statements"].items())
        return f"{trips['round_trips'] / sent:.2f} round trips, statements per reply: {per_reply}"

    burst_trace, burst_env = traced("burst")
    burst = first_contact_burst(
        stack, customers=300, progress=progress, recording=recorder("burst", idle=True), worker_env=burst_env
    )
    backlog_trace, backlog_env = traced("backlog")
    backlog = queued_backlog(
        stack, customers=300, progress=progress, recording=recorder("backlog", idle=False), worker_env=backlog_env
    )
    text = [
        f"# py-spy (250 Hz, --idle --nonblocking) of the one task worker while 300 new customers write at once "
        f"(default Telegram limits): all replies sent {burst['seconds_until_all_sent']} s after the first POST, "
        f"{burst['drain_per_second']} sends/s while sending, {burst['replies_sent_when_ingest_ended']} sent when the "
        f"last POST was answered (ingest {burst['ingest']['per_second']} updates/s; with the profiler and the "
        "protocol trace attached).",
        "",
        "## Database round trips of the worker per reply sent (libpq protocol trace, polling included)",
        round_trips(burst_trace, burst["outbox"].get("sent", 0)),
        "",
        "## Samples of the worker's task threads (task-N, each a task at a time; wall clock, threads added up)",
        summarize_collapsed(burst.pop("collapsed"), thread=r"task-\d+"),
        f"# The same 300 replies queued before the worker starts: py-spy (250 Hz, --gil) of the worker draining "
        f"them alone, in {backlog['seconds_until_all_sent']} s, {backlog['drain_per_second']} sends/s, "
        f"{backlog['worker_cpu_ms_per_reply']} ms of CPU per reply (with the profiler and the trace attached).",
        "",
        "## Database round trips of the worker per reply sent",
        round_trips(backlog_trace, backlog["outbox"].get("sent", 0)),
        "",
        "## Samples of the thread holding the GIL (where the worker's CPU goes)",
        summarize_collapsed(backlog.pop("collapsed")),
    ]
    output = Path(__file__).with_name("profiles") / f"{name}.txt"
    output.write_text("\n".join(text))
    progress(f"profile: wrote {output}")
    return {"burst": burst, "backlog": backlog, "profile": str(output)}
