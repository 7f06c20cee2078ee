"""Shared fixtures. Tests that need a service shared across processes are marked needs_redis /
needs_postgres: they skip on the embedded defaults and fail instead when SUPPORTSITE_REQUIRE_SERVICES=1
(as in CI), so CI can never pass with them skipped."""

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bots.sandbox.client import wait_until as poll_until
from bots.sandbox.runner import SandboxServer
from tickets import services
from tickets.models import Ticket

BASE_DIR = Path(settings.BASE_DIR)


def pytest_collection_modifyitems(config, items):
    require = os.environ.get("SUPPORTSITE_REQUIRE_SERVICES") == "1"
    has_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    missing = {"needs_redis": not settings.REDIS_URL, "needs_postgres": not has_postgres}
    for item in items:
        for marker, is_missing in missing.items():
            if item.get_closest_marker(marker) and is_missing:
                reason = f"{marker}: set {'REDIS_URL' if marker == 'needs_redis' else 'DATABASE_URL'}"
                if require:
                    item.add_marker(pytest.mark.usefixtures("_fail_missing_service"))
                    item.user_properties.append(("missing_service", reason))
                else:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def _fail_missing_service(request):
    reason = dict(request.node.user_properties)["missing_service"]
    pytest.fail(f"SUPPORTSITE_REQUIRE_SERVICES=1 but the service is not configured ({reason}).")


@pytest.fixture
def agent(django_user_model):
    return django_user_model.objects.create_user("agent", password="agent-password", is_staff=True)


@pytest.fixture
def other_agent(django_user_model):
    return django_user_model.objects.create_user("agent2", password="agent-password", is_staff=True)


@pytest.fixture
def is_postgres():
    return connection.vendor == "postgresql"


def resolve(ticket, days_ago=0):
    """Resolve ``ticket`` as an agent would have ``days_ago`` days ago (past TICKET_REOPEN_DAYS, the
    customer's next message opens a new ticket instead of reopening this one)."""
    services.change_ticket_status(ticket, Ticket.Status.RESOLVED, acting_user=None)
    Ticket.objects.filter(pk=ticket.pk).update(resolved_at=timezone.now() - timedelta(days=days_ago))


# --- The Telegram sandbox ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sandbox_server():
    with SandboxServer(default_token=settings.TELEGRAM_BOT_TOKEN) as server:
        yield server


@pytest.fixture
def sandbox(_sandbox_server):
    """The Telegram sandbox over real HTTP, with a clean state for this test.

    One server serves the whole session (in a background thread, on a free port); every test starts
    from a reset: no chats, calls, faults, webhooks or pending updates. ``sandbox.url`` is its base URL
    (point a bot at ``f"{sandbox.url}/bot"`` and ``f"{sandbox.url}/file/bot"``); ``sandbox.client(token)``
    returns a ``SandboxClient`` (``token`` defaults to ``settings.TELEGRAM_BOT_TOKEN``). Webhook retries
    wait 0.2 s, doubling up to 2 s.
    """
    _sandbox_server.client().reset()
    return _sandbox_server


# --- Real server processes (daphne, the task worker) on the test database --------------------------

WEBHOOK_SECRET = "test-webhook-secret"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def unique_bot_token():
    """A token of its own for each server, so the sandbox's records tell processes apart."""
    return f"{random.randint(10**8, 10**9 - 1)}:test-token"


def test_database_url():
    """The URL of the database pytest-django set up, for processes started by the tests."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        host = db["HOST"] or "127.0.0.1"
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{host}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


def wait_until(predicate, timeout=20, message="condition", interval=0.05):
    """The sandbox client's poll-with-a-deadline, failing the test with what it was waiting for."""
    try:
        return poll_until(predicate, timeout=timeout, interval=interval)
    except AssertionError:
        pytest.fail(f"Timed out after {timeout} s waiting for {message}.")


def lock_waits():
    """How many transactions on the test database are waiting (in PostgreSQL) for a lock held by another."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    with connection.cursor() as cursor:
        return cursor.execute(query).fetchone()[0]


def wait_for_lock_wait(message):
    """Poll PostgreSQL until a transaction on the test database is waiting for a lock held by another."""
    wait_until(lock_waits, message=message)


# --- Listening to the channel layer like a consumer would -------------------------------------------


def listen_to(group):
    """A new channel-layer channel added to ``group``; read it with drain() or next_event()."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def drain(channel, quiet=1.0):
    """The client events waiting on ``channel``, once nothing more arrives for ``quiet`` seconds."""
    layer = get_channel_layer()

    async def run():
        events = []
        while True:
            try:
                events.append((await asyncio.wait_for(layer.receive(channel), quiet))["event"])
            except TimeoutError:
                return events

    return asyncio.run(run())


def next_event(channel, predicate, timeout=20):
    """The first client event on ``channel`` for which ``predicate`` is true; fails after ``timeout`` s."""
    layer = get_channel_layer()

    async def run():
        async with asyncio.timeout(timeout):
            while not predicate(event := (await layer.receive(channel))["event"]):
                pass
            return event

    try:
        return asyncio.run(run())
    except TimeoutError:
        pytest.fail(f"No matching event on {channel} within {timeout} s.")


@dataclass
class Process:
    """A child process of the test (server or worker), with its output kept in a log file."""

    popen: subprocess.Popen
    log_path: Path

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Server(Process):
    url: str = ""
    token: str = ""

    def post_update(self, update, secret=WEBHOOK_SECRET, **kwargs):
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        return httpx.post(f"{self.url}/telegram/webhook/", json=update, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def process_env(transactional_db, sandbox):
    """Environment for a production-like server or worker on the test database and the sandbox."""

    def build(token, **overrides):
        env = {
            **os.environ,
            "DJANGO_DEBUG": "0",
            "DJANGO_HTTPS": "0",
            "DJANGO_SECRET_KEY": "test-secret-key-for-subprocesses-only",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": test_database_url(),
            "TELEGRAM_BOT_TOKEN": token,
            "TELEGRAM_API_URL": sandbox.url,
            "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONUNBUFFERED": "1",
        }
        env.update({name: str(value) for name, value in overrides.items()})
        return env

    return build


def _spawn(args, env, log_path):
    log = open(log_path, "wb")
    popen = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=BASE_DIR)
    log.close()
    return popen


@pytest.fixture
def start_server(process_env, tmp_path):
    """Start daphne serving supportsite (call it once per process wanted); stopped after the test.
    ``application`` names another ASGI application to serve (the benchmark's, say)."""
    servers = []

    def start(token=None, application="supportsite.asgi:application", **env):
        token = token or unique_bot_token()
        port = free_port()
        log_path = tmp_path / f"daphne-{port}.log"
        popen = _spawn(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
            process_env(token, **env),
            log_path,
        )
        server = Server(popen=popen, log_path=log_path, url=f"http://127.0.0.1:{port}", token=token)
        servers.append(server)

        def ready():
            if popen.poll() is not None:
                pytest.fail(f"daphne exited with {popen.returncode}:\n{server.log()}")
            try:
                return httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, message=f"daphne on port {port}")
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_worker(process_env, tmp_path):
    """Start the task worker (django-tasks-db's db_worker), or another ``command`` of manage.py, for a bot
    token; stopped after the test."""
    workers = []

    def start(token, command=("db_worker", "--interval", "0.05", "--no-startup-delay"), **env):
        log_path = tmp_path / f"worker-{len(workers)}.log"
        popen = _spawn([sys.executable, "manage.py", *command], process_env(token, **env), log_path)
        worker = Process(popen=popen, log_path=log_path)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
