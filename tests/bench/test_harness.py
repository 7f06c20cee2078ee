"""The benchmark harness's own pieces, run cheaply so that `make bench` cannot rot. Nothing here is timed:
the figures come from `make bench`; these tests check that its counting, its baselines and its probes work."""

import asyncio
import json
import subprocess
import sys
import uuid

import httpx
import pytest
import redis
import websockets.sync.client
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

from bench import load, profiling, report
from bench.endpoints import BARE_BEHIND_MIDDLEWARE_PATH, BARE_IN_FRONT_PATH, BARE_PATH
from bench.relay import RELAY_GROUP, RELAY_MESSAGE_TYPE, RELAY_PATH
from bench.stats import RequestLog, combine, last_receiver_latencies, percentile, summarize
from bench.traffic import DUPLICATE, NEW, conversation_stream, distinct_update_ids, webhook_stream
from bench.views import BARE_BOT_ID
from bots.models import TelegramUpdate
from tests.conftest import BASE_DIR, WEBHOOK_SECRET, wait_until
from tickets.models import Message, TicketEvent

# --- Counting -----------------------------------------------------------------------------------------


def test_percentiles_are_nearest_rank():
    values = [5, 1, 4, 2, 3, 10, 9, 8, 7, 6]
    assert percentile(values, 0.5) == 5
    assert percentile(values, 0.99) == 10
    assert percentile(values, 0.1) == 1
    assert percentile([], 0.5) is None
    assert summarize([0.010, 0.020, 0.030]) == {"count": 3, "p50_ms": 20.0, "p99_ms": 30.0, "max_ms": 30.0}


def test_the_request_log_tallies_each_kind_and_status_and_the_rate_over_the_whole_run():
    log = RequestLog()
    log.add(NEW, 200, started=10.0, ended=10.5, key=1)
    log.add(NEW, 503, started=10.2, ended=11.0, key=2)
    log.add(DUPLICATE, 200, started=10.4, ended=12.0, key=1)

    summary = log.summary()

    assert summary["requests"] == 3
    assert summary["seconds"] == 2.0
    assert summary["per_second"] == 1.5
    assert summary["by_kind"][NEW]["count"] == 2
    assert summary["by_kind"][DUPLICATE]["p50_ms"] == 1600.0
    assert summary["statuses"] == {NEW: {200: 1, 503: 1}, DUPLICATE: {200: 1}}
    assert summary["distinct_accepted"] == 1


def test_rounds_taken_in_turns_combine_into_one_run_without_the_gaps_between_them():
    first, second = RequestLog(), RequestLog()
    first.add(NEW, 200, started=10.0, ended=11.0, key=1)
    first.add(NEW, 200, started=10.0, ended=12.0, key=2)
    second.add(DUPLICATE, 200, started=50.0, ended=50.5, key=1)
    second.add(NEW, 503, started=50.0, ended=52.0, key=3)
    # As they come back from the load generator's processes.
    rounds = [json.loads(json.dumps(log.summary(with_log=True))) for log in (first, second)]

    combined = combine(rounds)

    assert (combined["requests"], combined["seconds"], combined["per_second"]) == (4, 4.0, 1.0)
    assert combined["by_kind"][NEW]["count"] == 3
    assert combined["statuses"] == {DUPLICATE: {"200": 1}, NEW: {"200": 2, "503": 1}}
    assert combined["distinct_accepted"] == 2
    assert "log" not in combined


def test_the_last_receiver_decides_an_events_latency_and_an_event_someone_missed_is_counted_apart():
    sent = {1: 100.0, 2: 101.0}
    received = [{1: 100.010, 2: 101.005}, {1: 100.030}]

    latencies, missed = last_receiver_latencies(sent, received)

    assert latencies == [pytest.approx(0.030)]
    assert missed == 1


# --- The traffic ----------------------------------------------------------------------------------------


def test_the_webhook_stream_mixes_in_redeliveries_of_updates_sent_well_before():
    stream = webhook_stream(1000, 30, 0.1, seed=5, first_update_id=1, lag=64)

    kinds = [kind for kind, _ in stream]
    assert len(stream) == 1000
    assert kinds.count(DUPLICATE) == 100
    assert len(distinct_update_ids(stream)) == 900
    first_sent = {}
    for position, (kind, update) in enumerate(stream):
        if kind == NEW:
            first_sent[update["update_id"]] = position
        else:
            assert position - first_sent[update["update_id"]] > 64
    assert len({update["message"]["from"]["id"] for _, update in stream}) == 30


def test_the_conversation_stream_answers_every_update_and_keeps_each_customers_messages_in_order():
    stream = conversation_stream(20, 3, 0.1, seed=2, first_update_id=1, first_user_id=500, lag=10)

    new = [update for kind, update in stream if kind == NEW]
    assert len(new) == 60
    assert sum(kind == DUPLICATE for kind, _ in stream) == 6
    assert {update["message"]["text"] for update in new} == {"/status"}
    assert all(update["message"]["entities"][0]["type"] == "bot_command" for update in new)
    for user_id in range(500, 520):
        message_ids = [update["message"]["message_id"] for update in new if update["message"]["chat"]["id"] == user_id]
        assert message_ids == [1, 2, 3]
    first_contact = conversation_stream(5, 1, 0, seed=2, first_update_id=1, first_user_id=500)
    assert {update["message"]["text"][0] for _, update in first_contact} != {"/"}


# --- The load generator's client ----------------------------------------------------------------------------


ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;x=1\r\n!!!\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
    # The server closes the connection after each of these four.
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: keep-alive, close\r\n\r\nbusy",
    b"HTTP/1.1 200 OK\r\n\r\nuntil the end",  # a body the closed connection ends
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut",  # broken off
    b"garbage\r\n",  # not HTTP
    b"HTTP/1.1 204 No Content\r\n\r\n",
]


def test_the_load_generators_client_reads_each_way_an_answer_can_end_and_reconnects_after_a_close():
    """Each answer is framed differently; a request after an answer that closed, or broke off, the connection
    goes out on a new one, and every request's body reaches the server whole."""

    async def scenario():
        bodies, connections = [], []
        answers = iter(ANSWERS)

        async def serve(reader, writer):
            connections.append(writer)
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                length = int(next(line for line in head.split(b"\r\n") if line.startswith(b"Content-Length:"))[15:])
                bodies.append(await reader.readexactly(length))
                answer = next(answers)
                writer.write(answer)
                if answer in ANSWERS[3:7]:
                    writer.close()
                    return

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        requests = [(NEW, number, json.dumps({"n": number}).encode()) for number in range(len(ANSWERS))]
        async with server:
            log = await load.post_all(
                requests, targets=[f"http://127.0.0.1:{port}/hook"], concurrency=1, secret="s", deadline_s=30, label="t"
            )
        return log, bodies, len(connections)

    log, bodies, connections = asyncio.run(scenario())

    assert log.statuses[NEW] == {200: 3, 202: 1, 503: 1, "IncompleteReadError": 1, "IndexError": 1, 204: 1}
    assert bodies == [json.dumps({"n": number}).encode() for number in range(len(ANSWERS))]
    assert connections == 5  # one for the first four answers, then one after each close and after the garbage


# --- Profiles and round trips ------------------------------------------------------------------------------

COLLAPSED = """\
thread (101): MainThread;run (daphne/server.py:10);process_update (telegram/ext/_application.py:20) 6
thread (102): ThreadPoolExecutor-7_0;run (daphne/server.py:10);execute (psycopg/cursor.py:30) 3
thread (103): ThreadPoolExecutor-9_0;run (daphne/server.py:11) 1
"""

TRACE = """\
F\t10\tQuery\t "BEGIN"
B\t5\tReadyForQuery\t T
F\t21\tParse\t "" "INSERT INTO bots_telegramupdate VALUES ($1)" 1 NNNN
F\t4\tSync
B\t5\tReadyForQuery\t T
F\t11\tQuery\t "COMMIT"
B\t5\tReadyForQuery\t I
F\t5\tQuery\t ""
B\t5\tReadyForQuery\t I
"""


def test_a_profile_summary_adds_up_functions_and_counts_the_threads_seen():
    text = profiling.summarize_collapsed(COLLAPSED, requests=4)

    assert "samples: 10" in text
    assert "distinct threads seen: 3 (ThreadPoolExecutor-N_N 2, MainThread 1)" in text
    assert "thread pools started during the recording (from their names): 3, 0.75 per request" in text
    assert " 100.0%  run (daphne/server.py)" in text
    assert "  60.0%  process_update (telegram/ext/_application.py)" in text
    main_thread = profiling.summarize_collapsed(COLLAPSED, thread="MainThread")
    assert "samples of MainThread: 6" in main_thread
    assert "psycopg" not in main_thread


def test_round_trips_are_counted_from_libpq_protocol_traces():
    counts = profiling.count_round_trips([TRACE, TRACE])

    assert counts["round_trips"] == 8
    assert counts["transactions"] == 2
    assert counts["statements"] == {"BEGIN": 2, "INSERT": 2, "COMMIT": 2, "(empty: the pool's health check)": 2}


def test_a_transaction_that_rolls_back_counts_as_one():
    counts = profiling.count_round_trips([TRACE.replace('"COMMIT"', '"ROLLBACK"'), TRACE])

    assert counts["transactions"] == 2


def test_each_statement_of_a_query_of_several_counts_in_one_round_trip():
    trace = (
        "F\t90\tQuery\t \"INSERT INTO c VALUES ('a; SELECT b') RETURNING id; SELECT 1 FROM t FOR NO KEY UPDATE\"\n"
        "B\t5\tReadyForQuery\t T\n"
    )

    counts = profiling.count_round_trips([trace])

    assert counts["round_trips"] == 1
    assert counts["statements"] == {"INSERT": 1, "SELECT": 1}


# --- The report --------------------------------------------------------------------------------------------


def webhook_row(per_second, duplicates=True):
    by_kind = {NEW: {"count": 9, "p50_ms": 10.0, "p99_ms": 20.0, "max_ms": 30.0}}
    if duplicates:
        by_kind[DUPLICATE] = {"count": 1, "p50_ms": 5.0, "p99_ms": 6.0, "max_ms": 6.0}
    return {
        "requests": 10,
        "per_second": per_second,
        "per_second_by_round": [per_second * 0.9, per_second * 1.1],
        "p50_ms": 10.0,
        "p99_ms": 20.0,
        "by_kind": by_kind,
        "statuses": {NEW: {"200": 9}},
        "cpu_ms_per_request": 5.0,
        "cores_used": 0.9,
        "pg_connections_max": 7,
        "pg_connections_after": 2,
        "messages_stored": 9,
        "distinct_updates": 9,
        "distinct_accepted": 9,
    }


def test_the_report_renders_ratios_and_replaces_only_the_text_between_its_markers(tmp_path):
    results = {
        "webhook": {"daphne": {"ours": webhook_row(50.0), "bare": webhook_row(200.0, False), "pool_max_size": 10}}
    }
    doc = tmp_path / "performance.md"
    doc.write_text(
        f"intro\n{report.RESULTS[0]}\nold\n{report.RESULTS[1]}\nmiddle\n{report.PLANS[0]}\n{report.PLANS[1]}\n"
    )

    text = report.render(results, ["- Machine: test"])
    report.write_doc(text, "the plans\n", doc)

    assert "webhook at **0.25×** the bare Django view (in turns, round by round: 0.25×, 0.25×)" in text
    assert "(equal: yes)" in text
    written = doc.read_text()
    assert written.startswith("intro\n")
    assert "old" not in written
    assert "- Machine: test" in written
    assert "middle\n" in written
    assert "the plans\n" in written


def test_the_ingest_ceiling_rows_give_the_webhook_and_the_goal_as_shares_of_the_bare_view():
    webhook, bare = webhook_row(100.0), webhook_row(400.0, False)
    for row in (webhook, bare):
        row |= {"machine_cpu_ms_per_request": 4.0, "machine_cores_used": 1.8}
    webhook["machine_cpu_ms_by_process"] = {"total": 4.0, "servers": 2.5, "postgresql": 1.0, "load_generator": 0.5}

    rows = report.ceiling_rows({"webhook": webhook, "bare": bare})
    notes, by_process = report.ceiling_notes({"webhook": webhook, "bare": bare})

    assert rows[0].startswith("| 2 daphne, no worker (replies queued, none sent) | 10 (9) | 100.0 |")
    assert rows[1].startswith("| 2 daphne, the bare INSERT view in front of Django | 10 | 400.0 |")
    assert "0.25× the bare view (round by round: 0.25×, 0.25×)" in notes
    assert "(equal: yes)" in notes
    assert "The goal of 300 updates/s is 0.75× the bare view's rate" in notes
    assert by_process == "  - the webhook: CPU ms per request: servers 2.5, PostgreSQL 1.0, load generator 0.5."


# --- The baselines and the probes, on a live server with bench.settings -------------------------------------


def run_load(spec):
    result = subprocess.run(
        [sys.executable, "-m", "bench.load", "webhook", json.dumps(spec)],
        cwd=BASE_DIR,
        capture_output=True,
        check=True,
        timeout=120,
    )
    return json.loads(result.stdout)


def load_spec(url, first_update_id, duplicate_share=0.1):
    stream = {"kind": "webhook", "count": 30, "customers": 5, "duplicate_share": duplicate_share, "seed": 1, "lag": 5}
    stream["first_update_id"] = first_update_id
    return {"targets": [url], "stream": stream, "secret": WEBHOOK_SECRET, "concurrency": 4, "deadline_s": 60}


def test_the_load_generator_drives_the_webhook_and_the_bare_insert_view_served_three_ways(start_server):
    server = start_server(application="bench.asgi:application", DJANGO_SETTINGS_MODULE="bench.settings")

    ours = run_load({**load_spec(f"{server.url}/telegram/webhook/", 1), "label": "webhook"})
    bare = [
        run_load({**load_spec(f"{server.url}{path}", 1000 * number, duplicate_share=0), "label": "bare"})
        for number, path in enumerate((BARE_PATH, BARE_IN_FRONT_PATH, BARE_BEHIND_MIDDLEWARE_PATH), start=1)
    ]

    assert ours["requests"] == 30
    assert ours["distinct_accepted"] == 27
    assert ours["statuses"] == {DUPLICATE: {"200": 3}, NEW: {"200": 27}}
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 27
    assert [side["statuses"] for side in bare] == [{NEW: {"200": 30}}] * 3
    assert ours["machine_cpu_s"] > 0  # the machine's CPU while the requests ran
    assert TelegramUpdate.objects.filter(kind="bench", bot_id=BARE_BOT_ID).count() == 90
    # Each way of serving the view, told by the headers: no middleware; SecurityMiddleware's checks only;
    # the whole browser middleware.
    headers = [
        httpx.post(f"{server.url}{path}", json={"update_id": update_id}, timeout=30).headers
        for update_id, path in ((9, BARE_PATH), (10, BARE_IN_FRONT_PATH), (11, BARE_BEHIND_MIDDLEWARE_PATH))
    ]
    assert [("X-Content-Type-Options" in each, "X-Frame-Options" in each) for each in headers] == [
        (False, False),
        (True, False),
        (True, True),
    ]


@pytest.mark.needs_redis
def test_the_bare_relay_forwards_group_events_and_the_probe_notes_each_broadcast(start_server):
    log_key = f"{settings.REDIS_PREFIX}:bench-test:{uuid.uuid4()}"
    server = start_server(
        application="bench.asgi:application", DJANGO_SETTINGS_MODULE="bench.settings", BENCH_BROADCAST_LOG=log_key
    )
    layer = get_channel_layer()

    with websockets.sync.client.connect(server.url.replace("http://", "ws://") + RELAY_PATH) as socket:
        async_to_sync(layer.group_send)(RELAY_GROUP, {"type": RELAY_MESSAGE_TYPE, "event": {"type": "bench", "n": 1}})
        assert json.loads(socket.recv(timeout=20)) == {"type": "bench", "n": 1}

    run_load({**load_spec(f"{server.url}/telegram/webhook/", 1), "label": "webhook"})
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        noted = [entry.decode().split() for entry in client.lrange(log_key, 0, -1)]
    finally:
        client.delete(log_key)
    stored = set(TicketEvent.objects.values_list("ticket_id", "seq"))
    assert len(stored) > 27
    assert sorted((int(ticket_id), int(seq)) for ticket_id, seq, _ in noted) == sorted(stored)


@pytest.mark.needs_postgres
def test_the_protocol_trace_counts_each_updates_round_trips(start_server, tmp_path):
    server = start_server(
        application="bench.asgi:application", DJANGO_SETTINGS_MODULE="bench.settings", BENCH_PG_TRACE_DIR=tmp_path
    )

    run_load({**load_spec(f"{server.url}/telegram/webhook/", 1), "label": "webhook"})

    traces = wait_until(lambda: [path.read_text() for path in tmp_path.glob("*.trace")], message="a trace file")
    counts = profiling.count_round_trips(traces)
    assert counts["transactions"] >= 30
    assert counts["statements"]["INSERT"] >= 30
    assert counts["round_trips"] > counts["transactions"]


@pytest.mark.needs_postgres
@pytest.mark.django_db
def test_the_data_scale_generator_fills_tickets_and_every_page_is_measured_with_its_plan(django_user_model):
    from bench import datascale

    reader = django_user_model.objects.create_user("bench-reader", is_staff=True, is_superuser=True)

    datascale.generate(40, 4, reader.pk)
    pages = datascale.measure_pages(reader)

    assert Message.objects.count() == 160
    assert set(pages) >= {"admin changelist", "admin changelist, unread filter", "inbox: mine", "inbox: all"}
    assert all("actual time=" in page["plan"] and page["queries"] >= 1 for page in pages.values())
