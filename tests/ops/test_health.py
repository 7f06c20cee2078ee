"""``manage.py healthcheck`` and ``GET /readyz`` (G10): real services, real failures, bounded in time."""

import asyncio
import json
import threading
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from ops.health import OutboxCheck, TelegramCheck, check_health
from ops.models import WorkerHeartbeat
from ops.worker import Heartbeat
from tests.conftest import WEBHOOK_SECRET, unique_bot_token, wait_until
from tickets import services
from tickets.models import Message

# --timeout of the failure tests. The command keeps a second of it to print and exit; unbounded,
# a black hole would hold it for the channel layer's 30 s read timeout or the pool's 60 s (set below).
TIMEOUT = 5
# The tests tell a bounded command from an unbounded one (30 s or more, above) without timing it
# tightly: on a loaded machine, starting and ending a Python process alone can take seconds. The
# command's own figure (its report's duration_ms per check) is what the closing notes quote.
WELL_BELOW_UNBOUNDED = 4 * TIMEOUT
WEBHOOK_URL = "http://127.0.0.1:9/telegram/webhook/"


def report_of(finished):
    """The JSON report the command printed (its only line starting with a JSON object)."""
    line = next(line for line in finished.output.splitlines() if line.startswith('{"status"'))
    return json.loads(line)


def statuses(report):
    return {check["name"]: check["status"] for check in report["checks"]}


@pytest.mark.needs_redis
@pytest.mark.needs_postgres
def test_healthy_services_exit_0_and_every_check_is_ok(run_command, start_worker, sandbox):
    token = unique_bot_token()
    sandbox.client(token).set_webhook(WEBHOOK_URL, WEBHOOK_SECRET)
    start_worker(token)
    wait_until(WorkerHeartbeat.objects.exists, message="the worker's first heartbeat")

    finished = run_command("healthcheck", "--json", token=token, TELEGRAM_WEBHOOK_URL=WEBHOOK_URL)

    report = report_of(finished)
    assert finished.returncode == 0, finished.output
    assert report["status"] == "ok"
    assert statuses(report) == dict.fromkeys(["database", "cache", "channel_layer", "telegram", "outbox"], "ok")
    assert all(isinstance(check["duration_ms"], int) and check["detail"] for check in report["checks"])


def test_the_default_output_is_a_readable_table(run_command, sandbox):
    finished = run_command("healthcheck", DJANGO_DEBUG=1, TELEGRAM_BOT_TOKEN="")

    lines = finished.output.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "TIME", "DETAIL"]
    assert any(line.startswith("telegram") and "skipped" in line for line in lines)
    assert "Overall:" in finished.output


@pytest.mark.parametrize("service", ["redis", "postgres"])
@pytest.mark.parametrize("target", ["closed_port", "black_hole_port"])
def test_an_unreachable_service_fails_the_command_within_its_timeout(request, run_command, service, target):
    port = request.getfixturevalue(target)
    if service == "redis":
        env, failing = {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}, {"cache", "channel_layer"}
    else:
        env = {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/supportsite", "DATABASE_POOL_TIMEOUT": 60}
        failing = {"database"}

    finished = run_command("healthcheck", "--json", "--timeout", str(TIMEOUT), **env)

    report = report_of(finished)
    assert finished.returncode == 1, finished.output
    assert report["status"] == "fail"
    assert failing <= {name for name, status in statuses(report).items() if status == "fail"}
    assert finished.seconds < WELL_BELOW_UNBOUNDED, f"took {finished.seconds:.2f} s"
    if service == "redis" and target == "closed_port":
        # The cause's type, not the layer's LayerUnavailable that wraps every Redis error.
        details = {check["name"]: check["detail"] for check in report["checks"]}
        assert details["channel_layer"] == "channel layer unavailable (ConnectionError)"
    print(f"\n{service} at a {target}: exit 1 after {finished.seconds:.2f} s; {report['checks']}")


# --- Telegram's view of the webhook (in-process, against the sandbox over HTTP) ------------------------


@pytest.fixture
def bot(settings, sandbox):
    settings.TELEGRAM_SANDBOX = False
    settings.TELEGRAM_BOT_TOKEN = unique_bot_token()
    settings.TELEGRAM_API_URL = sandbox.url
    settings.TELEGRAM_WEBHOOK_URL = WEBHOOK_URL
    return sandbox.client(settings.TELEGRAM_BOT_TOKEN)


def telegram_check():
    return asyncio.run(check_health(checks=(TelegramCheck,))).checks[0]


def test_telegram_ok_when_it_delivers_to_the_configured_url(bot):
    bot.set_webhook(WEBHOOK_URL, "s")

    check = telegram_check()

    assert (check.status, check.detail) == ("ok", "webhook set; 0 updates waiting")


def test_telegram_delivering_to_another_url_fails(bot):
    bot.set_webhook("http://127.0.0.1:10/elsewhere/", "s")

    check = telegram_check()

    assert check.status == "fail"
    assert "another URL than TELEGRAM_WEBHOOK_URL" in check.detail
    assert "127.0.0.1" not in check.detail


def test_telegram_without_a_webhook_fails(bot):
    assert telegram_check().status == "fail"


def test_telegram_pending_updates_over_the_threshold_degrade(bot, settings, black_hole_port):
    settings.HEALTH_PENDING_UPDATES_MAX = 2
    settings.TELEGRAM_WEBHOOK_URL = f"http://127.0.0.1:{black_hole_port}/telegram/webhook/"
    bot.set_webhook(settings.TELEGRAM_WEBHOOK_URL, "s")
    for user_id in (1, 2, 3):
        bot.send_message(user_id, "hello?")

    check = telegram_check()

    assert check.status == "degraded"
    assert "3 updates waiting at Telegram (more than 2)" in check.detail


def test_telegram_recent_delivery_error_degrades_with_its_message(bot, settings, closed_port):
    settings.TELEGRAM_WEBHOOK_URL = f"http://127.0.0.1:{closed_port}/telegram/webhook/"
    bot.set_webhook(settings.TELEGRAM_WEBHOOK_URL, "s")
    bot.send_message(1, "hello?")
    bot.wait_until(lambda: bot.webhook_info().get("last_error_message"))

    check = telegram_check()

    assert check.status == "degraded"
    assert "last delivery error" in check.detail and "Connection refused" in check.detail


def test_telegram_without_a_token_is_skipped_with_the_reason(settings):
    settings.TELEGRAM_SANDBOX = True

    check = telegram_check()

    assert check.status == "skipped"
    assert "TELEGRAM_BOT_TOKEN is not set" in check.detail


# --- The outbox and the worker -------------------------------------------------------------------------


def queued_reply(age):
    customer, _ = services.get_or_create_customer(services.TelegramProfile(user_id=4242, first_name="Bo"))
    ticket, _ = services.get_or_open_ticket(customer)
    reply, _ = services.queue_reply(ticket, "on its way", author=None)
    Message.objects.filter(pk=reply.pk).update(created_at=timezone.now() - age)
    return reply


def outbox_check():
    return asyncio.run(check_health(checks=(OutboxCheck,))).checks[0]


def test_a_queued_reply_older_than_the_threshold_degrades(transactional_db, settings):
    settings.HEALTH_OUTBOX_MAX_AGE_SECONDS = 300
    Heartbeat("worker-a").beat()
    queued_reply(age=timedelta(minutes=10))

    check = outbox_check()

    assert check.status == "degraded"
    assert "1 queued (oldest 600 s)" in check.detail and "replies wait longer than 300 s" in check.detail


def test_a_recent_queued_reply_with_a_worker_alive_is_ok(transactional_db):
    Heartbeat("worker-a").beat()
    queued_reply(age=timedelta(seconds=5))

    check = outbox_check()

    assert check.status == "ok"
    assert "1 worker(s) alive" in check.detail


def test_no_worker_alive_while_a_task_waits_fails(transactional_db, settings):
    settings.HEALTH_WORKER_SILENCE_SECONDS = 60
    queued_reply(age=timedelta(minutes=5))
    DBTaskResult.objects.update(enqueued_at=timezone.now() - timedelta(minutes=5))

    check = outbox_check()

    assert check.status == "fail"
    assert "no task worker alive, a task has waited 300 s" in check.detail


def test_every_worker_stuck_in_one_task_degrades(transactional_db, settings):
    settings.HEALTH_WORKER_SILENCE_SECONDS = 60
    stuck = Heartbeat("worker-a")
    stuck.busy_since = timezone.now() - timedelta(minutes=5)
    stuck.beat()

    check = outbox_check()

    assert check.status == "degraded"
    assert "1 worker(s) alive, 1 with every task thread busy for over 60 s: no worker is free" in check.detail


def test_a_worker_of_two_threads_is_busy_only_while_both_run_a_task():
    heartbeat = Heartbeat("worker-b", threads=2)
    other = threading.Thread(target=heartbeat.task_started, args=(None,))
    other.start()
    other.join()
    assert heartbeat.busy_since is None  # one thread is free to take a task

    heartbeat.task_started(None)
    assert heartbeat.busy_since is not None
    heartbeat.task_finished(None)
    assert heartbeat.busy_since is None


def test_no_worker_alive_with_nothing_waiting_only_degrades(transactional_db):
    assert outbox_check().status == "degraded"


# --- /readyz ---------------------------------------------------------------------------------------------


def test_readyz_is_503_while_redis_is_down_and_200_once_it_is_back(start_server, redis_server):
    redis = redis_server()
    # DJANGO_HTTPS on: the load balancer still probes over plain HTTP, with no redirect.
    server = start_server(REDIS_URL=redis.url, DJANGO_HTTPS=1, HEALTH_TIMEOUT=3)
    bound = 3 + 5  # HEALTH_TIMEOUT, and time for the request itself on a busy machine

    def readyz():
        return httpx.get(f"{server.url}/readyz", timeout=bound)

    up = readyz()
    assert up.status_code == 200, up.text
    assert {"database": "ok", "cache": "ok", "channel_layer": "ok"}.items() <= statuses(up.json()).items()

    redis.stop()
    down = readyz()
    assert down.status_code == 503
    assert {"cache": "fail", "channel_layer": "fail"}.items() <= statuses(down.json()).items()

    redis.start()
    wait_until(lambda: readyz().status_code == 200, message="/readyz to answer 200 with Redis back")

    for response in (up, down):
        assert response.headers["Cache-Control"].startswith("max-age=0")
        for revealing in ("127.0.0.1", str(redis.port), server.token, WEBHOOK_SECRET, "redis://"):
            assert revealing not in response.text


def test_healthz_does_no_io_and_answers_while_redis_is_down(start_server, redis_server):
    redis = redis_server()
    server = start_server(REDIS_URL=redis.url)
    redis.stop()

    response = httpx.get(f"{server.url}/healthz", timeout=5)

    assert (response.status_code, response.text) == (200, "ok\n")


def test_a_probe_by_address_is_answered_over_plain_http_whatever_the_allowed_hosts(start_server):
    """A load balancer or a supervisor probes a server by its address, over plain HTTP."""
    server = start_server(DJANGO_HTTPS="1", DJANGO_ALLOWED_HOSTS="support.example.com")
    by_address = {"Host": "10.0.0.5:8000"}

    for path in ("/healthz", "/readyz"):
        probe = httpx.get(f"{server.url}{path}", headers=by_address, timeout=30)
        assert probe.status_code in (200, 503) and probe.headers["Cache-Control"].startswith("max-age=0")
        assert httpx.post(f"{server.url}{path}", headers=by_address, timeout=30).status_code == 405
    # Every other path still validates the host, the webhook too.
    assert httpx.get(f"{server.url}/desk/", headers=by_address, timeout=30).status_code == 400
    through_tls_proxy = {**by_address, "X-Forwarded-Proto": "https"}  # else the HTTPS redirect refuses it first
    assert httpx.post(f"{server.url}/telegram/webhook/", headers=through_tls_proxy, timeout=30).status_code == 400
