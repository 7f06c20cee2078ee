"""Fault drills (marked ``drill``): the real stack — daphne, the task worker, the Telegram sandbox — on a
PostgreSQL cluster and a Redis server of the drills' own, which a drill stops, restarts or kills while
updates and replies stream through. The machine's shared PostgreSQL and Redis are never touched.

One cluster and one Redis serve every drill of the session; each drill finds both running, gets a
database of its own (a copy of one migrated once), starts the processes it needs, and stops them after
itself. A database per drill keeps one drill's leftovers (a reply still queued, its task) out of the
next drill's workers.
"""

import itertools
import subprocess
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from bots.sandbox.client import SandboxClient
from bots.sandbox.runner import SandboxServer
from tests.conftest import (
    BASE_DIR,
    WEBHOOK_SECRET,
    WORKER_COMMAND,
    Process,
    RedisServer,
    Server,
    launch_server,
    launch_worker,
    server_environment,
    unique_bot_token,
    wait_until,
)

from .postgres import PostgresServer

TEMPLATE = "supportsite_drills"  # migrated, with the agent: each drill's database is a copy
AGENT, AGENT_PASSWORD = "drill-agent", "drill-agent-password-1"
_databases = itertools.count(1)


@dataclass
class Services:
    postgres: PostgresServer
    redis: RedisServer
    database: str = TEMPLATE

    def environment(self, token, sandbox_url, **overrides):
        """A production-like server or worker environment on the drills' own PostgreSQL and Redis."""
        services = {"DATABASE_URL": self.postgres.url(self.database), "REDIS_URL": self.redis.url}
        return server_environment(token, sandbox_url, **{**services, "SUPPORTSITE_SINGLE_PROCESS": 0, **overrides})

    def with_new_database(self):
        """These services with a new database, copied from the template."""
        database = f"{TEMPLATE}_{next(_databases)}"
        self.postgres.query("postgres", f"CREATE DATABASE {database} TEMPLATE {TEMPLATE}")
        return replace(self, database=database)

    def query(self, sql, params=()):
        return self.postgres.query(self.database, sql, params)

    def count(self, sql, params=()):
        return self.query(sql, params)[0][0]

    def inbound(self, user_ids):
        """(customer, text) of every stored message from the customers ``user_ids``, in the order stored."""
        return self.query(
            "SELECT c.telegram_user_id, m.text FROM tickets_message m JOIN tickets_ticket t ON t.id = m.ticket_id "
            "JOIN tickets_customer c ON c.id = t.customer_id WHERE c.telegram_user_id = ANY(%s) "
            "AND m.direction = 'in' ORDER BY m.id",
            (list(user_ids),),
        )

    def ticket_of(self, user_id):
        """The id of the customer's ticket and its latest seq, once the customer has one."""
        query = (
            "SELECT t.id, t.last_seq FROM tickets_ticket t JOIN tickets_customer c ON c.id = t.customer_id "
            "WHERE c.telegram_user_id = %s"
        )
        return wait_until(lambda: next(iter(self.query(query, (user_id,))), None), message=f"{user_id}'s ticket")


def _manage(env, *command):
    finished = subprocess.run([sys.executable, "manage.py", *command], env=env, cwd=BASE_DIR, capture_output=True)
    assert finished.returncode == 0, finished.stdout.decode() + finished.stderr.decode()


@pytest.fixture(scope="session")
def drill_services(tmp_path_factory):
    """The drills' PostgreSQL (with the template database: migrated, with a staff agent AGENT) and Redis, for
    the whole session."""
    redis_directory = tmp_path_factory.mktemp("drill-redis")
    services = Services(PostgresServer(), RedisServer(redis_directory))
    try:
        services.redis.start()
        services.postgres.create()
        services.postgres.query("postgres", f"CREATE DATABASE {TEMPLATE}")
        env = services.environment(unique_bot_token(), "http://127.0.0.1:9", DJANGO_SUPERUSER_PASSWORD=AGENT_PASSWORD)
        _manage(env, "migrate", "--noinput")
        _manage(env, "createsuperuser", "--noinput", "--username", AGENT, "--email", "drill@example.com")
        yield services
    finally:
        services.redis.stop()
        services.postgres.destroy()


@dataclass
class Drill:
    """One drill's view of the stack: its bot (in the sandbox), and the servers and workers it started."""

    services: Services
    sandbox: SandboxServer
    log_dir: Path
    token: str = field(default_factory=unique_bot_token)
    processes: list = field(default_factory=list)

    @property
    def bot(self) -> SandboxClient:
        return self.sandbox.client(self.token)

    def environment(self, **overrides):
        return self.services.environment(self.token, self.sandbox.url, **overrides)

    def start_server(self, **overrides) -> Server:
        """daphne on the drills' services, the sandbox delivering this drill's bot's updates to it."""
        server = launch_server(self.environment(**overrides), self.log_dir)
        self.processes.append(server)
        self.bot.set_webhook(f"{server.url}/telegram/webhook/", secret=WEBHOOK_SECRET)
        return server

    def start_worker(self, command=WORKER_COMMAND, **overrides) -> Process:
        log_path = self.log_dir / f"{command[0]}-{len(self.processes)}.log"
        worker = launch_worker(self.environment(**overrides), log_path, command)
        self.processes.append(worker)
        return worker

    def stop_all(self):
        for process in self.processes:
            process.stop()


@pytest.fixture
def drill(drill_services, sandbox, tmp_path):
    """A drill on running services (an earlier drill that failed halfway may have left one stopped), with a
    database of its own."""
    if not drill_services.redis.answers():
        drill_services.redis.start()
    if not drill_services.postgres.is_running():
        drill_services.postgres.start()
    drill = Drill(drill_services.with_new_database(), sandbox, tmp_path)
    yield drill
    drill.stop_all()


class CustomerStream:
    """Customers writing to the bot in the sandbox, one message after another in turn, from a thread, until
    stopped. Like Telegram, the sandbox delivers them to the webhook concurrently and redelivers each until a
    2xx; the stream keeps at most ``window`` of them unacknowledged (it writes on when the webhook catches up).
    """

    def __init__(self, bot, user_ids, window=10):
        self.bot = bot
        self.user_ids = user_ids
        self.window = window
        self.sent = []  # (customer, text) of every message written, in order
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.error = None

    def run(self):
        try:
            while not self.stopped.is_set():
                if self.pending() >= self.window:
                    self.stopped.wait(0.02)
                    continue
                user_id = self.user_ids[len(self.sent) % len(self.user_ids)]
                text = f"message {len(self.sent)}"
                self.bot.send_message(user_id, text)
                self.sent.append((user_id, text))
        except BaseException as error:
            self.error = error

    def pending(self):
        return self.bot.webhook_info()["pending_update_count"]

    def acknowledged(self):
        """How many of the messages written the webhook has acknowledged."""
        sent = len(self.sent)
        return sent - self.pending()

    def wait_for_acknowledged(self, count, message):
        wait_until(lambda: self.error or self.acknowledged() >= count, timeout=60, message=message)
        assert self.error is None, self.error

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join()

    def finish(self):
        """Stop writing; return once the webhook has acknowledged every message written."""
        self.stopped.set()
        self.thread.join()
        assert self.error is None, self.error
        wait_until(lambda: self.pending() == 0, timeout=60, message="the webhook to take every update")
        return self.sent
