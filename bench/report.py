"""The bench's results as Markdown tables, printed and written into docs/performance.md (between markers)."""

import datetime
import os
import platform
import re
from importlib.metadata import version
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
RESULTS = ("<!-- bench:results:start -->", "<!-- bench:results:end -->")
PLANS = ("<!-- bench:plans:start -->", "<!-- bench:plans:end -->")
PACKAGES = ["Django", "channels", "channels-redis", "daphne", "python-telegram-bot", "uvicorn", "uvloop", "psycopg"]


def machine_and_versions(stack):
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or "unknown CPU",
    )
    memory_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    postgres = stack.sql("SHOW server_version")[0][0]
    redis_version = stack.redis().info("server")["redis_version"]
    packages = ", ".join(f"{name} {version(name)}" for name in PACKAGES)
    return [
        f"- Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} cores, {memory_kb / 1024**2:.0f} GiB RAM, {cpu}",
        f"- Versions: Python {platform.python_version()}, {packages}, PostgreSQL {postgres}, Redis {redis_version}",
    ]


def _pair(summary):
    if not summary or summary.get("p50_ms") is None:
        return "–"
    return f"{summary['p50_ms']:g} / {summary['p99_ms']:g}"


def _ratio(numerator, denominator):
    return f"{numerator / denominator:.2f}×" if numerator and denominator else "–"


def _ratios_by_round(ours, bare):
    rounds = zip(ours["per_second_by_round"], bare["per_second_by_round"], strict=True)
    return ", ".join(_ratio(ours_rate, bare_rate) for ours_rate, bare_rate in rounds)


def webhook_table(results):
    lines = [
        "| server | endpoint | requests | req/s | p50 / p99 ms | new p50 / p99 | duplicate p50 / p99 | "
        "CPU ms/req | cores | PG conns max / after (pool max) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for server, sides in results.items():
        for side, label in (
            ("ours", "webhook"),
            ("bare", "bare Django view (the request cycle, no middleware)"),
            ("bare_in_front", "the same, answered in front of Django as the webhook is"),
            ("bare_behind_middleware", "the same, behind the browser middleware"),
        ):
            if (row := sides.get(side)) is None:
                continue
            kinds = row["by_kind"]
            lines.append(
                f"| {server} | {label} | {row['requests']} | {row['per_second']} | {_pair(row)} | "
                f"{_pair(kinds.get('new'))} | {_pair(kinds.get('duplicate'))} | {row['cpu_ms_per_request']} | "
                f"{row['cores_used']} | {row['pg_connections_max']} / {row['pg_connections_after']} "
                f"({sides['pool_max_size']}) |"
            )
        ours = sides["ours"]
        check = "yes" if ours["messages_stored"] == ours["distinct_accepted"] else "**NO**"
        by_round = _ratios_by_round(ours, sides["bare"])
        notes.append(
            f"- {server}: webhook at **{_ratio(ours['per_second'], sides['bare']['per_second'])}** the bare Django "
            f"view (in turns, round by round: {by_round}); "
            f"messages stored {ours['messages_stored']} for {ours['distinct_accepted']} distinct updates answered "
            f"200 of {ours['distinct_updates']} in the stream (equal: {check}); statuses {ours['statuses']}"
        )
        if (in_front := sides.get("bare_in_front")) is not None:
            notes.append(
                f"- {server}: against the same bare view answered in front of Django as the webhook is (like with "
                f"like, in the same turns), **{_ratio(ours['per_second'], in_front['per_second'])}** (round by "
                f"round: {_ratios_by_round(ours, in_front)})"
            )
        if (behind := sides.get("bare_behind_middleware")) is not None:
            notes.append(
                f"- {server}: against the same bare view behind the browser middleware (the earliest baseline), "
                f"{_ratio(ours['per_second'], behind['per_second'])}"
            )
    return [*lines, "", *notes]


def fanout_table(results):
    lines = [
        "| layer | side | clients | events | broadcast → last receiver p50 / p99 ms | POST → last receiver p50 / p99 | "
        "missed | typing offered/s | typing received/s per client (median, slowest) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for layer, sides in results.items():
        for side, label in (("relay", "bare relay (group_send)"), ("ours", "our consumers (webhook)")):
            row = sides[side]
            if not row.get("available"):
                lines.append(f"| {layer} | {label} | – | – | not measured: {row['reason']} | | | | |")
                continue
            typing = row["typing"]
            lines.append(
                f"| {layer} | {label} | {row['clients']} | {row['events_sent']} | "
                f"{_pair(row['broadcast_to_last_receiver'])} | {_pair(row.get('post_to_last_receiver'))} | "
                f"{row['events_missed_by_some']} | {typing['offered_per_second']} | "
                f"{typing['received_per_second_median']}, {typing['received_per_second_slowest']} |"
            )
        if sides["ours"].get("available"):
            ours_p99 = sides["ours"]["broadcast_to_last_receiver"]["p99_ms"]
            relay_p99 = sides["relay"]["broadcast_to_last_receiver"]["p99_ms"]
            notes.append(f"- {layer}: our last-receiver p99 at {_ratio(ours_p99, relay_p99)} the relay's")
    return lines + (["", *notes] if notes else [])


def _machine_notes(machine):
    limits = "rate limits raised" if machine["limits_raised"] else "default limits"
    stored = "yes" if machine["messages_stored"] == machine["ingest"]["distinct_accepted"] else "**NO**"
    cpu = machine["cpu_ms_per_update"]
    return [
        f"- Whole machine ({limits}), after a warm-up of {machine['warmup_updates']} updates whose replies were "
        f"sent before the measured stream ({machine['warmup_replies_doubled']} of them doubled): messages stored "
        f"{machine['messages_stored']} for "
        f"{machine['ingest']['distinct_accepted']} distinct updates answered 200 (equal: {stored}); outbox "
        f"{machine['outbox']}. CPU per update with its reply, from the first POST until every reply was sent: "
        f"{cpu['total']} ms in all: servers {cpu['servers']}, workers {cpu['workers']}, PostgreSQL "
        f"{cpu['postgresql']}, Redis {cpu['redis']}, the sandbox {cpu['sandbox']}, the load generator "
        f"{cpu['load_generator']}, anything else {cpu['other']}; with every cycle of these cores on updates, at "
        f"most {machine['cpu_bound_updates_per_second']} updates/s; with only the product's processes on them "
        f"({machine['product_cpu_ms_per_update']} ms: servers, workers, PostgreSQL, Redis), at most "
        f"{machine['product_cpu_bound_updates_per_second']}.",
        f"  - While the updates came in ({machine['ingest_wall_seconds']} s from starting the load to its end, "
        f"{machine['ingest_cores_used']} cores busy, {machine['replies_sent_during_ingest']} replies sent "
        f"meanwhile), CPU ms per request: in all {machine['ingest_cpu_ms_per_update']['total']}, "
        f"{_cpu_parts(machine['ingest_cpu_ms_per_update'])}.",
    ]


def ceiling_rows(ceiling):
    labels = {
        "webhook": "2 daphne, no worker (replies queued, none sent)",
        "bare": "2 daphne, the bare INSERT view in front of Django",
    }
    # The bare view is sent no redeliveries: all its requests are distinct.
    distinct = {"webhook": f" ({ceiling['webhook']['distinct_updates']})", "bare": ""}
    return [
        f"| {labels[side]} | {row['requests']}{distinct[side]} | {row['per_second']} | {_pair(row)} | "
        "– | – | – | – | – |"
        for side, row in ceiling.items()
    ]


def ceiling_notes(ceiling):
    webhook, bare = ceiling["webhook"], ceiling["bare"]
    stored = "yes" if webhook["messages_stored"] == webhook["distinct_accepted"] else "**NO**"
    by_round = _ratios_by_round(webhook, bare)
    return [
        f"- Ingest ceiling (the two in turns, after a warm-up; no worker running): the bare INSERT view answered in "
        "front of Django as the webhook is "
        f"{bare['per_second']} requests/s at {bare['machine_cpu_ms_per_request']} ms of the machine's CPU per "
        f"request ({bare['machine_cores_used']} cores busy), the webhook {webhook['per_second']} updates/s at "
        f"{webhook['machine_cpu_ms_per_request']} ms ({webhook['machine_cores_used']} cores): "
        f"{_ratio(webhook['per_second'], bare['per_second'])} the bare view (round by round: {by_round}); "
        f"messages stored {webhook['messages_stored']} for {webhook['distinct_accepted']} distinct updates "
        f"answered 200 (equal: {stored}). The goal of 300 updates/s is {_ratio(300, bare['per_second'])} "
        "the bare view's rate on these cores.",
        *(
            f"  - {name}: CPU ms per request: {_cpu_parts(side['machine_cpu_ms_by_process'])}."
            for name, side in (("the bare view", bare), ("the webhook", webhook))
            if "machine_cpu_ms_by_process" in side
        ),
    ]


def _cpu_parts(cpu):
    names = {"load_generator": "load generator", "postgresql": "PostgreSQL", "redis": "Redis"}
    return ", ".join(f"{names.get(kind, kind)} {ms}" for kind, ms in cpu.items() if kind != "total")


def machine_table(machines, burst, backlogs, ceiling=None):
    lines = [
        "| run | updates (distinct) | ingest/s | ingest p50 / p99 ms | replies queued / sent | doubled | "
        "out of order | drain/s | s until all sent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| 2 daphne + 2 workers, {'rate limits raised' if machine['limits_raised'] else 'default limits'} | "
            f"{machine['updates']} ({machine['distinct_updates']}) | {machine['ingest']['per_second']} | "
            f"{_pair(machine['ingest'])} | {machine['replies_queued']} / {machine['outbox'].get('sent', 0)} | "
            f"{machine['replies_doubled']} | {machine['order_violations']} | {machine['drain_per_second']} | "
            f"{machine['seconds_until_all_sent']} |"
            for machine in machines
        ),
        *(ceiling_rows(ceiling) if ceiling else []),
        f"| {burst['customers']} new customers at once, 1 daphne + 1 worker, default limits | {burst['customers']} | "
        f"{burst['ingest']['per_second']} | {_pair(burst['ingest'])} | {sum(burst['outbox'].values())} / "
        f"{burst['outbox'].get('sent', 0)} | {burst['replies_doubled']} | – | {burst['drain_per_second']} | "
        f"{burst['seconds_until_all_sent']} |",
    ]
    lines += [
        f"| {backlog['customers']} first replies queued, then 1 worker starts, default limits, "
        f"{_answering(backlog)} | {backlog['customers']} | – | – | "
        f"{sum(backlog['outbox'].values())} / {backlog['outbox'].get('sent', 0)} | {backlog['replies_doubled']} | – | "
        f"{backlog['drain_per_second']} | {backlog['seconds_until_all_sent']} |"
        for backlog in backlogs
    ]
    return [
        *lines,
        "",
        *(line for machine in machines for line in _machine_notes(machine)),
        *(ceiling_notes(ceiling) if ceiling else []),
        f"- First contact: the {burst['customers']} automatic replies were all sent "
        f"{burst['seconds_until_all_sent']} s after the first POST ({burst['replies_per_second']} replies/s overall; "
        f"{burst['replies_sent_when_ingest_ended']} sent when the last POST was answered).",
        *(
            f"- Backlog, {_answering(backlog)}: one worker sent the "
            f"{backlog['customers']} queued replies {backlog['seconds_until_all_sent']} s after it was up, at "
            f"{backlog['drain_per_second']}/s from its first send to its last, using "
            f"{backlog['worker_cpu_ms_per_reply']} ms of CPU per reply."
            for backlog in backlogs
        ),
        "- Telegram allows a bot ~30 messages/s (TELEGRAM_GLOBAL_MESSAGES_PER_SECOND).",
    ]


def _answering(backlog):
    latency = backlog["telegram_latency_ms"]
    return f"Telegram answering in {latency:g} ms" if latency else "Telegram (the sandbox) answering at once"


def datascale_table(result):
    lines = [
        f"{result['tickets']:,} tickets, {result['messages']:,} messages (generated in {result['generated_s']} s).",
        "",
        "| page | ms (median of 3, or 1 if over 1 s) | queries | slowest query ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for page, row in result["pages"].items():
        lines.append(f"| {page} | {row['ms']} | {row['queries']} | {row.get('slowest_query_ms', row['ms'])} |")
    return lines


def plans(result):
    lines = []
    for page, row in result["pages"].items():
        lines += [f"#### {page}", "", "```", row["plan"], "```", ""]
    return lines


def render(results, header):
    lines = [*header, ""]
    sections = [
        ("webhook", "Webhook (10% duplicates, 32 keep-alive connections) and PostgreSQL connections", webhook_table),
        ("fanout", "Fan-out (one ticket, clients over two daphne processes)", fanout_table),
        ("datascale", "Data scale", datascale_table),
    ]
    for key, title, table in sections:
        if key in results:
            lines += [f"### {title}", "", *table(results[key]), ""]
        if key == "fanout" and "machine" in results:
            machine = machine_table(
                results["machine"], results["first_contact"], results["backlog"], results.get("ceiling")
            )
            lines += ["### Whole machine", "", *machine, ""]
    return "\n".join(lines).rstrip() + "\n"


def write_doc(results_text, plans_text, doc=DOC):
    """Replace the text between each pair of markers in ``doc``."""
    text = doc.read_text()
    for (start, end), body in ((RESULTS, results_text), (PLANS, plans_text)):
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = f"{before}{start}\n{body}{end}{after}"
    doc.write_text(text)
