"""The real stack, started by the bench on free ports: its own PostgreSQL database and Redis key prefix,
the Telegram sandbox, daphne or uvicorn servers and task workers, each a process of its own.

Everything is stopped and dropped again by ``Stack.close()`` (the database with FORCE, the Redis keys by
prefix), also when a workload fails.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis

BASE_DIR = Path(__file__).resolve().parent.parent
BOT_TOKEN = "1000001:bench-token"  # noqa: S105  (the sandbox accepts any token)
WEBHOOK_SECRET = "bench-webhook-secret"  # noqa: S105
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(0.1)
    return result


def machine_cpu_seconds():
    """CPU time the whole machine has spent busy so far (every process, every core): /proc/stat's first line."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log_path: Path
    url: str = ""
    is_up: Callable[[], bool] | None = None  # a server's or a worker's readiness check (Stack.wait_until_up)

    @property
    def pid(self):
        return self.popen.pid

    def cpu_seconds(self):
        """User plus system CPU time this process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def thread_ids(self):
        try:
            return {int(tid) for tid in os.listdir(f"/proc/{self.pid}/task")}
        except FileNotFoundError:
            return set()

    def stop(self):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


@dataclass
class Stack:
    """The bench's services and processes. ``postgres_url`` names the server (any database on it);
    ``redis_url`` the Redis database the bench's keys go to, under a prefix of their own."""

    postgres_url: str
    redis_url: str
    run_dir: Path
    database: str = field(default_factory=lambda: f"supportsite_bench_{os.getpid()}")
    prefix: str = field(default_factory=lambda: f"supportsite-bench-{os.getpid()}")
    processes: list = field(default_factory=list)
    sandbox: Process | None = None

    # --- The database and Redis -------------------------------------------------------------------

    @property
    def database_url(self):
        parts = urlsplit(self.postgres_url)
        return urlunsplit(parts._replace(path=f"/{self.database}"))

    def create_database(self):
        with psycopg.connect(self.postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.database}"')
        self.manage("migrate", "--noinput")

    def drop_database(self):
        with psycopg.connect(self.postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')

    def sql(self, query, params=None):
        with psycopg.connect(self.database_url, autocommit=True) as connection:
            cursor = connection.execute(query, params)
            return cursor.fetchall() if cursor.description else None

    def reset_data(self):
        """Empty every table a workload fills, so each workload starts from the same state."""
        self.sql(
            "TRUNCATE tickets_ticketevent, tickets_readcursor, tickets_earlyedit, tickets_message, tickets_ticket, "
            "tickets_customer, "
            "bots_telegramupdate, django_tasks_database_dbtaskresult RESTART IDENTITY CASCADE"
        )
        self.delete_redis_keys()

    def redis(self):
        return redis.Redis.from_url(self.redis_url)

    def delete_redis_keys(self):
        client = self.redis()
        for keys in _batches(client.scan_iter(match=f"{self.prefix}*", count=1000), 500):
            client.delete(*keys)

    # --- Processes ---------------------------------------------------------------------------------

    def env(self, **overrides):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_HTTPS": "0",
            "DJANGO_SECRET_KEY": "bench-secret-key-for-the-benchmark-only",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_LOG_LEVEL": "WARNING",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "REDIS_PREFIX": self.prefix,
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PYTHONUNBUFFERED": "1",
        }
        if self.sandbox is not None:
            env["TELEGRAM_API_URL"] = self.sandbox.url
        env.update({name: str(value) for name, value in overrides.items()})
        return env

    def spawn(self, name, args, env):
        log_path = self.run_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=BASE_DIR)
        process = Process(name, popen, log_path)
        self.processes.append(process)
        return process

    def manage(self, *args, **env):
        subprocess.run(
            [sys.executable, "manage.py", *args], env=self.env(**env), cwd=BASE_DIR, check=True, capture_output=True
        )

    def start_sandbox(self):
        port = free_port()
        self.sandbox = self.spawn("sandbox", [sys.executable, "-m", "bench.sandbox", str(port)], os.environ.copy())
        self.sandbox.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(f"{self.sandbox.url}/sandbox/config"), 20, "the Telegram sandbox")
        return self.sandbox

    def start_server(self, server="daphne", name=None, **env):
        """daphne (or uvicorn) serving bench.asgi on a free port; returns once /healthz answers."""
        return self.wait_until_up(self.spawn_server(server, name, **env))[0]

    def start_worker(self, name=None, **env):
        """``manage.py worker``; returns once it has beaten (it is up), so its start-up is no workload's."""
        return self.wait_until_up(self.spawn_worker(name, **env))[0]

    def spawn_server(self, server="daphne", name=None, **env):
        """``start_server``'s process, not yet waited for (``wait_until_up``)."""
        port = free_port()
        if server == "daphne":
            args = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "bench.asgi:application"]
        else:
            args = [sys.executable, "-m", "uvicorn", "bench.asgi:application", "--host", "127.0.0.1"]
            args += ["--port", str(port), "--lifespan", "off", "--no-access-log", "--log-level", "warning"]
            args += ["--loop", "uvloop", "--http", "httptools"]
        process = self.spawn(name or f"{server}-{port}", args, self.env(**env))
        process.url = f"http://127.0.0.1:{port}"
        process.is_up = lambda: _answers(f"{process.url}/healthz")
        return process

    def spawn_worker(self, name=None, **env):
        """``start_worker``'s process, not yet waited for (``wait_until_up``)."""
        args = [sys.executable, "manage.py", "worker", "--interval", "0.1", "--no-startup-delay"]
        process = self.spawn(name or f"worker-{len(self.processes)}", args, self.env(**env))
        beaten = "SELECT count(*) FROM ops_workerheartbeat WHERE pid = %s"
        process.is_up = lambda: self.sql(beaten, [process.pid])[0][0]
        return process

    def wait_until_up(self, *processes):
        """Wait until every one of the spawned ``processes`` is up. Spawned first and waited for together, they
        start side by side, each on its own core when it can, instead of one after the other. Returns them."""
        for process in processes:
            wait_for(lambda process=process: self._alive(process) and process.is_up(), 30, process.name)
        return list(processes)

    def _alive(self, process):
        if process.popen.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode}:\n{process.log_path.read_text()}"
            )
        return True

    def stop(self, *processes):
        for process in processes:
            process.stop()
            self.processes.remove(process)

    def close(self):
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        self.sandbox = None
        self.drop_database()
        self.delete_redis_keys()


def _answers(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _batches(iterable, size):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class ConnectionSampler:
    """Samples how many server connections PostgreSQL has open to one database, in a thread."""

    QUERY = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"

    def __init__(self, stack, interval=0.2):
        self.stack = stack
        self.interval = interval
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-connections", daemon=True)

    def _run(self):
        with psycopg.connect(self.stack.database_url, autocommit=True) as connection:
            while not self._stop.is_set():
                (count,) = connection.execute(self.QUERY, [self.stack.database]).fetchone()
                self.samples.append(count)
                self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
