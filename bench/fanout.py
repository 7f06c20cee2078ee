"""Workload 2 (fan-out): WebSocket clients in one ticket spread over two daphne processes, with channels-redis'
core layer and with RedisPubSubChannelLayer; the product's consumers against the bare relay, in the same run."""

import json
import subprocess
import sys

import httpx

from .relay import RELAY_PATH
from .stack import BASE_DIR, WEBHOOK_SECRET
from .traffic import FIRST_USER_ID, customer_update
from .webhook import run_load

LAYERS = ("core", "pubsub")


def staff_session(stack):
    result = subprocess.run(
        [sys.executable, "-m", "bench.session"], cwd=BASE_DIR, env=stack.env(), stdout=subprocess.PIPE, check=True
    )
    return json.loads(result.stdout)


def open_ticket(stack, server, customer_id):
    """The customer's first message opens the ticket the clients watch; returns its id and latest seq."""
    update = customer_update(90_000_000, customer_id, 1, "Hello, the bench's ticket")
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}
    httpx.post(f"{server.url}/telegram/webhook/", json=update, headers=headers, timeout=30).raise_for_status()
    rows = stack.sql(
        "SELECT t.id, t.last_seq FROM tickets_ticket t JOIN tickets_customer c ON c.id = t.customer_id "
        "WHERE c.telegram_user_id = %s",
        [customer_id],
    )
    return rows[0]


def websocket_urls(servers, path):
    return [server.url.replace("http://", "ws://", 1) + path for server in servers]


def run(stack, *, clients, events, rate, typing_rate, typing_seconds, progress):
    results = {}
    customer_id = FIRST_USER_ID + 300_000_000
    for layer in LAYERS:
        stack.reset_data()
        log_key = f"{stack.prefix}:bench:broadcasts"
        env = {"BENCH_CHANNEL_LAYER": layer, "BENCH_BROADCAST_LOG": log_key}
        servers = stack.wait_until_up(
            *(stack.spawn_server("daphne", f"daphne-fanout-{layer}-{number}", **env) for number in range(2))
        )
        common = {"clients": clients, "events": events, "rate": rate}
        common |= {"typing_rate": typing_rate, "typing_seconds": typing_seconds}

        progress(f"fan-out ({layer} layer): bare relay, {clients} clients over 2 daphne, {events} events at {rate}/s")
        relay = run_load(
            "fanout", {**common, "side": "relay", "urls": websocket_urls(servers, RELAY_PATH)}, stack.env(**env)
        )

        progress(f"fan-out ({layer} layer): our consumers, {clients} clients in one ticket, messages by webhook")
        ticket_id, last_seq = open_ticket(stack, servers[0], customer_id)
        session = staff_session(stack)
        ours_spec = {
            **common,
            "side": "ours",
            "urls": websocket_urls(servers, f"/ws/tickets/{ticket_id}/"),
            "headers": {"Cookie": session["cookie"], "Origin": servers[0].url},
            "typist_headers": {"Cookie": session["typist_cookie"], "Origin": servers[0].url},
            "webhook_url": f"{servers[0].url}/telegram/webhook/",
            "secret": WEBHOOK_SECRET,
            "customer_id": customer_id,
            "ticket_id": ticket_id,
            "resume_after": last_seq,
            "first_update_id": 91_000_000,
            "redis_url": stack.redis_url,
            "broadcast_log": log_key,
        }
        ours = run_load("fanout", ours_spec, stack.env(**env))
        stack.stop(*servers)
        results[layer] = {"relay": relay, "ours": ours}
    return results
