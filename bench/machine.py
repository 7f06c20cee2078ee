"""Workload 3 (whole machine): two daphne processes and two workers, every update answered by an automatic
reply through the outbox; what the two daphne processes ingest with no worker running, against the bare
INSERT view on the same processes (the machine's ceiling for any view); and, at the default limits, 300 new
customers at once with one worker, and their 300 replies queued before one worker starts (its own pace,
without the webhook's)."""

import os
import resource
import time
from pathlib import Path

import httpx

from bots.sandbox.client import SandboxClient

from .endpoints import BARE_IN_FRONT_PATH
from .stack import BOT_TOKEN, CLOCK_TICKS, machine_cpu_seconds
from .stats import combine
from .traffic import FIRST_USER_ID, distinct_update_ids, stream_from
from .webhook import load_spec, run_load

# Telegram's limits, raised for the run against the sandbox to measure the workers' own ceiling.
RAISED_LIMITS = {"TELEGRAM_GLOBAL_MESSAGES_PER_SECOND": 100_000, "TELEGRAM_CHAT_INTERVAL_SECONDS": 0}
# Seconds the Bot API takes to answer a send from a server near it (the sandbox answers at once).
TELEGRAM_LATENCY = 0.1


def register_chats(stack, user_ids):
    """Telegram knows a chat once its customer wrote: let the sandbox see one message from each customer
    (no webhook is set, so nothing is delivered), then drop those updates."""
    sandbox = SandboxClient(stack.sandbox.url, BOT_TOKEN)
    with httpx.Client(timeout=10) as client:
        for number, user_id in enumerate(user_ids):
            chat = {"id": user_id, "type": "private", "first_name": f"Customer {user_id}"}
            message = {"message_id": 0, "chat": chat, "date": 0, "text": "(registers the chat)"}
            client.post(
                f"{sandbox.base_url}/sandbox/{BOT_TOKEN}/updates", json={"update_id": number, "message": message}
            )
    sandbox.delete_webhook(drop_pending_updates=True)


def outbox_state(stack):
    rows = stack.sql("SELECT delivery_status, count(*) FROM tickets_message WHERE direction = 'out' GROUP BY 1")
    return dict(rows)


def wait_for_replies(stack, expected, deadline_s, progress, label):
    """Poll until ``expected`` replies are sent (or failed, or the deadline passes); returns seconds waited."""
    started = time.monotonic()
    last_report = 0.0
    while True:
        state = outbox_state(stack)
        done = state.get("sent", 0) + state.get("failed", 0)
        waited = time.monotonic() - started
        if done >= expected or waited > deadline_s:
            return waited, state
        if waited - last_report >= 3:
            progress(f"  {label}: {state.get('sent', 0)}/{expected} replies sent")
            last_report = waited
        time.sleep(0.2)


def sent_calls(stack):
    calls = SandboxClient(stack.sandbox.url, BOT_TOKEN).calls("sendMessage")
    return [call for call in calls if call["status"] == 200]


def order_violations(stack):
    """Replies to one customer that reached Telegram in another order than they were queued (their chat
    numbers its messages as they arrive; the outbox numbers a customer's replies as they are queued)."""
    rows = stack.sql(
        """SELECT count(*) FROM (
             SELECT m.telegram_message_id
                    < lag(m.telegram_message_id) OVER (PARTITION BY t.customer_id ORDER BY m.outbox_seq, m.id) AS late
             FROM tickets_message m JOIN tickets_ticket t ON t.id = m.ticket_id
             WHERE m.direction = 'out' AND m.delivery_status = 'sent') replies
           WHERE late"""
    )
    return rows[0][0]


def sent_rate(calls):
    if len(calls) < 2:
        return None
    times = sorted(call["time"] for call in calls)
    return round((len(times) - 1) / (times[-1] - times[0]), 1) if times[-1] > times[0] else None


def whole_machine(stack, *, customers, per_customer, progress, limits):
    """Two daphne processes and two workers, every update answered by a reply; ``limits``: Telegram's rate
    limits for the run (RAISED_LIMITS, or {} for the defaults, at which the outbox drains at ~30/s).

    As in the ingest ceiling, the processes are warmed up first (the bot's Application initialised, the pools
    filled, the code paths loaded) by a few customers whose replies are sent before the measured stream
    starts: a server in production is not started for each burst."""
    stack.reset_data()
    SandboxClient(stack.sandbox.url, BOT_TOKEN).reset()
    first_user_id = FIRST_USER_ID + 100_000_000
    # 50 customers, or a third of a quick run's: the warm-up's replies go out at Telegram's 30/s before the stream.
    warmup = {"kind": "conversation", "customers": min(50, customers // 3), "per_customer": 2, "duplicate_share": 0}
    warmup |= {"seed": 12, "first_update_id": 59_000_000, "first_user_id": first_user_id + customers}
    register_chats(stack, [first_user_id + number for number in range(customers + warmup["customers"])])
    servers = [stack.spawn_server("daphne", f"daphne-machine-{number}", **limits) for number in range(2)]
    workers = [stack.spawn_worker(f"worker-machine-{number}", **limits) for number in range(2)]
    stack.wait_until_up(*servers, *workers)
    targets = [f"{server.url}/telegram/webhook/" for server in servers]
    warmed = len(stream_from(warmup))
    run_load("webhook", load_spec(targets, warmup, label="whole machine: warm-up", concurrency=64))
    _waited, warm = wait_for_replies(stack, warmed, 60, progress, "whole machine: warm-up")
    if warm != {"sent": warmed}:
        raise RuntimeError(f"The whole machine's warm-up did not send its {warmed} replies: outbox {warm}.")
    stream = {"kind": "conversation", "customers": customers, "per_customer": per_customer}
    stream |= {"duplicate_share": 0.1, "seed": 11, "first_update_id": 50_000_000, "first_user_id": first_user_id}
    expected = len(distinct_update_ids(stream_from(stream)))
    which = "Telegram's limits raised" if limits else "Telegram's default limits"
    progress(
        f"whole machine ({which}): {customers} customers x {per_customer} messages (+10% redeliveries) over "
        f"2 daphne, 2 workers, every update answered"
    )
    processes = {"servers": servers, "workers": workers, "sandbox": [stack.sandbox]}
    calls_before, messages_before = len(sent_calls(stack)), _inbound_messages(stack)
    cpu_before = cpu_snapshot()
    started = time.monotonic()
    ingest = run_load("webhook", load_spec(targets, stream, label="whole machine", concurrency=64))
    # What the ingest competed with: the workers' share of the cores while the updates came in.
    cpu_ingested, ingest_wall_s = cpu_snapshot(), time.monotonic() - started
    sent_during_ingest = len(sent_calls(stack)) - calls_before
    queued = sum(outbox_state(stack).values()) - warmed
    waited, state = wait_for_replies(stack, warmed + queued, 180, progress, "whole machine")
    total_s = time.monotonic() - started
    cpu = cpu_per_update(cpu_before, cpu_snapshot(), processes, expected)
    product_ms = sum(cpu[kind] for kind in PRODUCT_PROCESSES)
    calls = sent_calls(stack)
    messages_in = _inbound_messages(stack) - messages_before
    order = order_violations(stack)
    stack.stop(*servers, *workers)
    return {
        "limits_raised": bool(limits),
        "warmup_updates": warmed,
        "updates": ingest["requests"],
        "distinct_updates": expected,
        "ingest": ingest,
        "messages_stored": messages_in,
        "replies_expected": expected,
        "replies_queued": queued,
        "outbox": state | {"sent": state.get("sent", 0) - warmed},
        "replies_sent_to_telegram": len(calls) - calls_before,
        # Telegram accepted more messages than replies were recorded as sent: some went out twice.
        "replies_doubled": (len(calls) - calls_before) - (state.get("sent", 0) - warmed),
        "warmup_replies_doubled": calls_before - warmed,
        "order_violations": order,
        "drain_per_second": sent_rate(calls[calls_before:]),
        "seconds_until_all_sent": round(total_s, 1),
        "seconds_after_ingest": round(waited, 1),
        "cpu_ms_per_update": cpu,
        "ingest_cpu_ms_per_update": cpu_per_update(cpu_before, cpu_ingested, processes, ingest["requests"]),
        # Over the load process's whole life (its start included), not only its requests' span.
        "ingest_cores_used": round((cpu_ingested[0] - cpu_before[0]) / ingest_wall_s, 2),
        "ingest_wall_seconds": round(ingest_wall_s, 2),
        "replies_sent_during_ingest": sent_during_ingest,
        # What these cores could ingest if every CPU cycle went to updates and their replies: with the bench's
        # own processes (load generator, sandbox) on them, and with only the product's.
        "cpu_bound_updates_per_second": round(os.cpu_count() * 1000 / cpu["total"], 1),
        "product_cpu_ms_per_update": round(product_ms, 2),
        "product_cpu_bound_updates_per_second": round(os.cpu_count() * 1000 / product_ms, 1),
    }


def _inbound_messages(stack):
    return stack.sql("SELECT count(*) FROM tickets_message WHERE direction = 'in'")[0][0]


def ingest_ceiling(stack, *, customers, per_customer, rounds, progress):
    """What two daphne processes on these cores ingest with nothing else to do: the whole machine's stream
    to the webhook with no worker running (its replies are queued, none is sent), and to the bare INSERT
    view, in turns (ABBA, as bench.webhook.measure_in_turns) on the same two processes after a warm-up.
    Per side: the rate, latencies and the whole machine's CPU per request; and the bare view's rate is what
    any view, however lean, could ingest here."""
    stack.reset_data()
    servers = stack.wait_until_up(*(stack.spawn_server("daphne", f"daphne-ceiling-{number}") for number in range(2)))
    paths = {"webhook": "/telegram/webhook/", "bare": BARE_IN_FRONT_PATH}
    # The bare view stores every request it is sent (a redelivery would break its unique row): no duplicates.
    duplicates = {"webhook": 0.1, "bare": 0}
    streams = {}
    for number, side in enumerate(paths):
        stream = {"kind": "conversation", "customers": customers, "per_customer": per_customer, "seed": 13}
        first = 70_000_000 + number * 1_000_000
        streams[side] = stream | {"duplicate_share": duplicates[side], "first_update_id": first, "first_user_id": first}

    def spec(side, label, stream):
        return load_spec([f"{server.url}{paths[side]}" for server in servers], stream, label=label, concurrency=64)

    for side in paths:  # the bot's Application initialises, the pools fill, the code paths load
        warmup = {**streams[side], "customers": 50, "per_customer": 2, "duplicate_share": 0}
        warmup |= {"first_update_id": 79_000_000, "first_user_id": 79_000_000}
        run_load("webhook", spec(side, f"ceiling: {side} warm-up", warmup))
    progress(
        f"ingest ceiling: {customers} customers x {per_customer} /status over 2 daphne with no worker, to the "
        "webhook (+10% redeliveries) and to the bare INSERT view, in turns"
    )
    messages_before = _inbound_messages(stack)
    parts = {side: [] for side in paths}
    cpu_ms = {side: {} for side in paths}  # per process group, summed over the rounds
    for number in range(rounds):
        for side in list(paths) if number % 2 == 0 else list(reversed(paths)):
            count = len(stream_from(streams[side]))
            part = [count * number // rounds, count * (number + 1) // rounds]
            label = f"ceiling: {side} (round {number + 1} of {rounds})"
            before = cpu_snapshot()
            parts[side].append(run_load("webhook", {**spec(side, label, streams[side]), "part": part}))
            for kind, ms in cpu_per_update(before, cpu_snapshot(), {"servers": servers}, 1).items():
                cpu_ms[side][kind] = cpu_ms[side].get(kind, 0) + ms
    messages_stored = _inbound_messages(stack) - messages_before
    stack.stop(*servers)
    result = {}
    for side, measured in parts.items():
        summary = combine(measured)
        cpu_s = sum(part["machine_cpu_s"] for part in measured)
        result[side] = summary | {
            "per_second_by_round": [part["per_second"] for part in measured],
            "machine_cpu_ms_per_request": round(cpu_s * 1000 / summary["requests"], 2),
            "machine_cores_used": round(cpu_s / summary["seconds"], 2),
            "machine_cpu_ms_by_process": {
                kind: round(ms / summary["requests"], 2) for kind, ms in cpu_ms[side].items()
            },
        }
    result["webhook"]["messages_stored"] = messages_stored
    result["webhook"]["distinct_updates"] = len(distinct_update_ids(stream_from(streams["webhook"])))
    return result


# The product's processes, as cpu_per_update names them; the rest is the bench's or the machine's.
PRODUCT_PROCESSES = ("servers", "workers", "postgresql", "redis")


# Services by their processes' command names.
SERVICES = {"postgres": "postgresql", "redis-server": "redis"}


def cpu_snapshot():
    """The machine's busy CPU seconds, each process's ({pid: (command name, seconds)}), and that of this
    process's children that have ended (the load generator's, once it has)."""
    processes = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended meanwhile
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        processes[int(stat.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return machine_cpu_seconds(), processes, children.ru_utime + children.ru_stime


def cpu_per_update(before, after, processes, updates):
    """Milliseconds of CPU per update (with its reply) between two snapshots: the whole machine's, each of
    ``processes`` groups', PostgreSQL's and Redis' (their processes alive at the end), the load generator's,
    and the rest."""
    (machine_before, before_by_pid, children_before), (machine_after, after_by_pid, children_after) = before, after

    def used(pid):
        return after_by_pid[pid][1] - before_by_pid.get(pid, ("", 0.0))[1] if pid in after_by_pid else 0.0

    spent = {kind: sum(used(process.pid) for process in group) for kind, group in processes.items()}
    for command, service in SERVICES.items():
        spent[service] = sum(used(pid) for pid, (name, _) in after_by_pid.items() if name == command)
    spent["load_generator"] = children_after - children_before
    total = machine_after - machine_before
    spent = {"total": total, **spent, "other": total - sum(spent.values())}
    return {kind: round(seconds * 1000 / updates, 2) for kind, seconds in spent.items()}


def _first_contact(stack, customers, first_user_id, label):
    """Reset, then ``customers`` new customers write at once to one daphne (spawned here and returned: the caller
    waits for it with the processes it needs besides, Stack.wait_until_up)."""
    stack.reset_data()
    SandboxClient(stack.sandbox.url, BOT_TOKEN).reset()
    register_chats(stack, [first_user_id + number for number in range(customers)])
    server = stack.spawn_server("daphne", f"daphne-{label}")
    stream = {"kind": "conversation", "customers": customers, "per_customer": 1, "duplicate_share": 0}
    stream |= {"seed": 12, "first_update_id": 60_000_000, "first_user_id": first_user_id}
    return server, load_spec([f"{server.url}/telegram/webhook/"], stream, label=label, concurrency=40)


def first_contact_burst(stack, *, customers, progress, recording=None, worker_env=None):
    """``customers`` new customers write at once; one worker at Telegram's default limits sends the automatic
    replies. With ``recording`` (a profiling.Recording factory), the worker is sampled meanwhile."""
    server, spec = _first_contact(stack, customers, FIRST_USER_ID + 200_000_000, "burst")
    worker = stack.spawn_worker("worker-burst", **(worker_env or {}))
    stack.wait_until_up(server, worker)
    progress(f"first contact: {customers} new customers at once, one worker, default Telegram limits")
    profile = recording(worker).start() if recording else None
    started = time.monotonic()
    ingest = run_load("webhook", spec)
    sent_by_ingest_end = outbox_state(stack).get("sent", 0)
    _waited, state = wait_for_replies(stack, sum(outbox_state(stack).values()), 120, progress, "first contact")
    total_s = time.monotonic() - started
    collapsed = profile.stop() if profile else None
    calls = sent_calls(stack)
    stack.stop(server, worker)
    return {
        "customers": customers,
        "ingest": ingest,
        "outbox": state,
        "replies_sent_when_ingest_ended": sent_by_ingest_end,
        "replies_doubled": len(calls) - state.get("sent", 0),
        "seconds_until_all_sent": round(total_s, 1),
        "replies_per_second": round(state.get("sent", 0) / total_s, 1),
        "drain_per_second": sent_rate(calls),
        "collapsed": collapsed,
    }


def queued_backlog(stack, *, customers, progress, telegram_latency=0, recording=None, worker_env=None):
    """The first contact's ``customers`` replies queued while no worker runs; then one worker starts at
    Telegram's default limits: the worker's own pace, whatever the webhook's. ``telegram_latency``: seconds
    the sandbox holds each answer (the real Bot API's round trip, which the sandbox otherwise skips). With
    ``recording``, as above."""
    server, spec = _first_contact(stack, customers, FIRST_USER_ID + 300_000_000, "backlog")
    stack.wait_until_up(server)
    progress(f"backlog: {customers} new customers' replies queued with no worker running")
    ingest = run_load("webhook", spec)
    stack.stop(server)
    queued = sum(outbox_state(stack).values())
    if telegram_latency:
        SandboxClient(stack.sandbox.url, BOT_TOKEN).add_fault("sendMessage", delay=telegram_latency, times=None)
    progress(
        f"backlog: one worker starts on {queued} queued replies, default Telegram limits, "
        f"Telegram answering in {telegram_latency * 1000:g} ms"
    )
    worker = stack.start_worker(name="worker-backlog", **(worker_env or {}))
    profile = recording(worker).start() if recording else None
    started, cpu_before = time.monotonic(), worker.cpu_seconds()
    _waited, state = wait_for_replies(stack, queued, 120, progress, "backlog")
    total_s, cpu = time.monotonic() - started, worker.cpu_seconds() - cpu_before
    collapsed = profile.stop() if profile else None
    calls = sent_calls(stack)
    stack.stop(worker)
    return {
        "customers": customers,
        "telegram_latency_ms": telegram_latency * 1000,
        "ingest": ingest,
        "outbox": state,
        "replies_doubled": len(calls) - state.get("sent", 0),
        "worker_cpu_ms_per_reply": round(cpu * 1000 / state["sent"], 2) if state.get("sent") else None,
        "seconds_until_all_sent": round(total_s, 1),
        "drain_per_second": sent_rate(calls),
        "collapsed": collapsed,
    }
