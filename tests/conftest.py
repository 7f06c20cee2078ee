"""Shared fixtures. Tests that need a service shared across processes are marked needs_redis /
needs_postgres: they skip on the embedded defaults and fail instead when SUPPORTSITE_REQUIRE_SERVICES=1
(as in CI), so CI can never pass with them skipped. The fault drills (tests/drills, marked drill) start
PostgreSQL and Redis servers of their own, so they need those servers' binaries, not the services."""

import asyncio
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.utils import timezone

from bots.sandbox.client import wait_until as poll_until
from bots.sandbox.runner import SandboxServer
from tickets import services
from tickets.models import Ticket

BASE_DIR = Path(settings.BASE_DIR)
CHROMIUM = "/usr/bin/chromium"  # Debian's, driven by Playwright in the browser tests


def pytest_collection_modifyitems(config, items):
    from tests.drills.postgres import can_run_postgres  # imported here: it imports this module

    require = os.environ.get("SUPPORTSITE_REQUIRE_SERVICES") == "1"
    has_postgres = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    missing = {
        "needs_redis": (not settings.REDIS_URL, "set REDIS_URL"),
        "needs_postgres": (not has_postgres, "set DATABASE_URL"),
        "needs_nginx": (shutil.which("nginx") is None, "install nginx"),
        "needs_chromium": (shutil.which(CHROMIUM) is None, "install Debian's chromium (apt-get install -y chromium)"),
        "drill": (
            not can_run_postgres() or shutil.which("redis-server") is None,
            "install the PostgreSQL server and redis-server",
        ),
    }
    for item in items:
        for marker, (is_missing, what_to_do) in missing.items():
            if item.get_closest_marker(marker) and is_missing:
                reason = f"{marker}: {what_to_do}"
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
# The secret key of the processes the tests start (a test signing sessions for them uses it too).
SUBPROCESS_SECRET_KEY = "test-secret-key-for-subprocesses-only"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_ports_in_a_row(count):
    """The first of ``count`` consecutive free ports (honcho numbers a process type's instances in a row),
    below the kernel's ephemeral range: there no outgoing connection takes one before its server binds it."""
    ephemeral_from = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        first = random.randrange(10_000, ephemeral_from - count)
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first


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


async def wait_on_loop_until(predicate, timeout=20, message="condition", interval=0.01):
    """wait_until for a condition that the running event loop's own tasks bring about: it polls with
    asyncio.sleep, so they run between the polls."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := predicate()):
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"Timed out after {timeout} s waiting for {message}.")
        await asyncio.sleep(interval)
    return result


def lock_waits():
    """How many transactions on the test database are waiting (in PostgreSQL) for a lock held by another."""
    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
    with connection.cursor() as cursor:
        # Inside a transaction PostgreSQL keeps showing its first snapshot of the activity unless cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        return cursor.execute(query).fetchone()[0]


def wait_for_lock_wait(message, count=1):
    """Poll PostgreSQL until ``count`` transactions on the test database wait for locks held by others."""
    wait_until(lambda: lock_waits() >= count, message=message)


# --- Listening to the channel layer like a consumer would -------------------------------------------
# The pub/sub layer subscribes per event loop and hears only what is published while it is subscribed, so
# the listeners all live on one event loop, running in a thread of its own for the whole session.
_listening_loop = None


def _on_listening_loop(coroutine):
    global _listening_loop
    if _listening_loop is None:
        _listening_loop = asyncio.new_event_loop()
        threading.Thread(target=_listening_loop.run_forever, name="channel-layer listeners", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coroutine, _listening_loop).result()


def listen_to(group):
    """A new channel-layer channel added to ``group``; read it with drain() or next_event()."""
    layer = get_channel_layer()

    async def join():
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        return channel

    return _on_listening_loop(join())


def drain(channel, quiet=1.0):
    """The client events waiting on ``channel``, once nothing more arrives for ``quiet`` seconds.

    Its timeout cancels the pending receive, which the pub/sub layer takes for its consumer ending
    (channels-redis' RedisPubSubLoopLayer.receive): it drops the channel's queue and unsubscribes it, keeping
    its group memberships. Whatever reaches the channel before the next receive on it subscribes it again is
    lost, so drain a channel last, or where what it misses afterwards does not matter."""
    layer = get_channel_layer()

    async def run():
        events = []
        while True:
            try:
                events.extend((await asyncio.wait_for(layer.receive(channel), quiet))["events"])
            except TimeoutError:
                return events

    return _on_listening_loop(run())


def next_event(channel, predicate, timeout=20):
    """The first client event on ``channel`` for which ``predicate`` is true; fails after ``timeout`` s."""
    layer = get_channel_layer()

    async def run():
        async with asyncio.timeout(timeout):
            while True:
                for event in (await layer.receive(channel))["events"]:
                    if predicate(event):
                        return event

    try:
        return _on_listening_loop(run())
    except TimeoutError:
        pytest.fail(f"No matching event on {channel} within {timeout} s.")


@dataclass
class Process:
    """A child process of the test (server or worker), with its output kept in a log file."""

    popen: subprocess.Popen
    log_path: Path
    args: tuple = ()
    env: dict | None = None

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

    def restart(self):
        """Stop the process and start it again, the same way; its log goes on in the same file."""
        self.stop()
        self.popen = _spawn(self.args, self.env, self.log_path, mode="ab")


@dataclass
class Server(Process):
    url: str = ""
    token: str = ""

    def post_update(self, update, secret=WEBHOOK_SECRET, **kwargs):
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        return httpx.post(f"{self.url}/telegram/webhook/", json=update, headers=headers, timeout=30, **kwargs)

    def wait_ready(self):
        def ready():
            if self.popen.poll() is not None:
                pytest.fail(f"daphne exited with {self.popen.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, message=f"daphne at {self.url}")

    def restart(self):
        """Stop daphne and start it again on the same port (open WebSockets drop and must reconnect)."""
        super().restart()
        self.wait_ready()


def server_environment(token, sandbox_url, **overrides):
    """Environment for a production-like server or worker on the test database and the sandbox."""
    env = {
        **os.environ,
        "DJANGO_DEBUG": "0",
        "DJANGO_HTTPS": "0",
        "DJANGO_SECRET_KEY": SUBPROCESS_SECRET_KEY,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": test_database_url(),
        "TELEGRAM_BOT_TOKEN": token,
        "TELEGRAM_API_URL": sandbox_url,
        "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PYTHONUNBUFFERED": "1",
        # The tests start the workers they want; no server runs one of its own.
        "SUPPORTSITE_WORKER_IN_SERVER": "0",
    }
    if connection.vendor != "postgresql" or not settings.REDIS_URL:
        # On the embedded defaults production settings refuse SQLite and the in-memory layer.
        env["SUPPORTSITE_SINGLE_PROCESS"] = "1"
    env.update({name: str(value) for name, value in overrides.items()})
    return env


@pytest.fixture
def process_env(transactional_db, sandbox):
    """server_environment for this test's database and sandbox: ``process_env(token, **overrides)``."""

    def build(token, **overrides):
        return server_environment(token, sandbox.url, **overrides)

    return build


# Every process the suite starts, with the secrets it was given: none may ever appear in its log.
SPAWNED_LOGS: list[tuple[Path, list[str]]] = []
SECRET_VARIABLES = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_WEBHOOK_SECRET", "DJANGO_SECRET_KEY")


def _spawn(args, env, log_path, mode="wb"):
    SPAWNED_LOGS.append((log_path, [env[name] for name in SECRET_VARIABLES if env.get(name)]))
    log = open(log_path, mode)
    popen = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=BASE_DIR)
    log.close()
    return popen


@pytest.fixture(scope="session", autouse=True)
def _no_secret_in_any_log():
    """After the whole session: the log of every server, worker and command the suite started holds none
    of the secrets that process was given (the bot token, the webhook secret, the secret key)."""
    yield
    leaks = [
        f"{log_path}: {secret[:4]}…"
        for log_path, secrets in SPAWNED_LOGS
        for secret in secrets
        if secret in log_path.read_text(errors="replace")
    ]
    assert not leaks, f"secrets found in process logs: {leaks}"


def launch_server(env, log_dir, application="supportsite.asgi:application"):
    """daphne serving supportsite (or another ASGI ``application``) with ``env`` on a free port, once it
    answers; the caller stops it."""
    port = free_port()
    args = (sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application)
    log_path = log_dir / f"daphne-{port}.log"
    server = Server(
        popen=_spawn(args, env, log_path),
        log_path=log_path,
        args=args,
        env=env,
        url=f"http://127.0.0.1:{port}",
        token=env["TELEGRAM_BOT_TOKEN"],
    )
    server.wait_ready()
    return server


WORKER_COMMAND = ("worker", "--interval", "0.05", "--no-startup-delay")


def launch_worker(env, log_path, command=WORKER_COMMAND):
    """The task worker (or another ``command`` of manage.py) with ``env``; the caller stops it."""
    args = (sys.executable, "manage.py", *command)
    return Process(popen=_spawn(args, env, log_path), log_path=log_path, args=args, env=env)


@pytest.fixture
def start_server(process_env, tmp_path):
    """Start daphne serving supportsite (call it once per process wanted); stopped after the test.
    ``application`` names another ASGI application to serve (the benchmark's, say)."""
    servers = []

    def start(token=None, application="supportsite.asgi:application", **env):
        server = launch_server(process_env(token or unique_bot_token(), **env), tmp_path, application)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_worker(process_env, tmp_path):
    """Start the task worker (manage.py worker), or another ``command`` of manage.py, for a bot
    token; stopped after the test."""
    workers = []

    def start(token, command=WORKER_COMMAND, **env):
        worker = launch_worker(process_env(token, **env), tmp_path / f"worker-{len(workers)}.log", command)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@dataclass
class Finished:
    """A command that ran to its end: its exit code, its output (stdout and stderr) and its wall time."""

    returncode: int
    output: str
    seconds: float


@pytest.fixture
def run_command(process_env, tmp_path):
    """Run ``manage.py *command`` to its end in a production-like process (see process_env)."""
    runs = itertools.count()

    def run(*command, token=None, **env):
        log_path = tmp_path / f"command-{next(runs)}.log"
        started = time.monotonic()
        env = process_env(token or unique_bot_token(), **env)
        popen = _spawn([sys.executable, "manage.py", *command], env, log_path)
        returncode = popen.wait(120)
        return Finished(returncode, log_path.read_text(errors="replace"), time.monotonic() - started)

    return run


# --- Listeners that misbehave, and private Redis servers --------------------------------------------


@pytest.fixture
def closed_port():
    """A port bound but not listening: every connection is refused at once."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


@pytest.fixture
def black_hole_port():
    """A port that accepts connections (the kernel completes the handshake) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield listener.getsockname()[1]


class RedisServer:
    """A private redis-server on its own port and data directory, which a test may stop and start."""

    def __init__(self, directory):
        self.directory = directory
        self.port = free_port()
        self.popen = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        args += ["--save", "", "--appendonly", "no", "--logfile", str(self.directory / "redis.log")]
        self.popen = subprocess.Popen(args, cwd=self.directory)
        wait_until(self.answers, message=f"redis-server on port {self.port}")
        return self

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def pause(self):
        """Freeze the server (SIGSTOP): its connections stay open and nothing answers, like a Redis whose host
        or network path vanished without a word."""
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self):
        self.popen.send_signal(signal.SIGCONT)

    def stop(self):
        if self.popen is not None and self.popen.poll() is None:
            self.resume()  # a paused server would not act on the SIGTERM
            self.popen.terminate()
            self.popen.wait(15)

    def client(self):
        """A redis-py client of this server, for a test to look at or configure it."""
        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server(tmp_path):
    """Start private Redis servers (call once per server wanted); stopped after the test."""
    servers = []

    def start():
        directory = tmp_path / f"redis-{len(servers)}"
        directory.mkdir()
        server = RedisServer(directory)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def connection_when_announced():
    """For each announcement, whether the announcing thread still had its database connection open (a
    receiver such as the broadcast may wait on the network, and must not hold a pooled connection: G9)."""
    from django.db import connection

    from tickets.hooks import announced

    held = []

    def receiver(sender, events, **kwargs):
        held.append(connection.connection is not None)

    announced.connect(receiver)
    yield held
    announced.disconnect(receiver)
