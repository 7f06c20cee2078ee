"""The system's health: one set of checks, shared by ``manage.py healthcheck`` and ``GET /readyz`` (G10).

Each check's ``run()`` returns a line for a person (no secrets, hosts or configuration values: ``/readyz`` is
public) or raises django-health-check's exceptions: ``ServiceWarning`` means degraded,
``ServiceUnavailable`` means fail, ``Skipped`` means it does not apply here. Critical checks (the
database, the cache, the channel layer) decide readiness: a process that fails one cannot serve.

Bounds: every check runs in a daemon thread of its own under its own timeout (at most the overall
one), and the caller stops waiting at that deadline, whatever the check is doing. django-health-check
(4.8.0, the newest release that runs on Python 3.11) provides the database check, the check base
class and the exceptions; its runner cannot bound a sync check (it runs in the event loop's default
executor, whose threads Python joins at exit, so a check stuck on a black-hole port would keep the
command alive past its timeout), and its cache check goes through the cache's async API, which Django
runs on asgiref's shared thread, with the same effect. Hence the runner and the cache check here.
"""

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from health_check.base import HealthCheck
from health_check.checks import Database
from health_check.exceptions import HealthCheckException, ServiceUnavailable, ServiceWarning

from bots.application import fetch_webhook_info
from realtime.probe import round_trip
from tickets.queries import outbox_backlog

from .models import WorkerHeartbeat

OK, DEGRADED, FAIL, SKIPPED = "ok", "degraded", "fail", "skipped"


class Skipped(HealthCheckException):
    message_type = "Skipped"


def seconds(delta):
    return f"{delta.total_seconds():.0f} s"


@dataclasses.dataclass
class Check(HealthCheck):
    """A named check, made for one run with its ``timeout`` (the seconds ``run()`` may take)."""

    name = "check"
    critical = False

    @property
    def budget(self):
        return self.timeout.total_seconds()


@dataclasses.dataclass
class DatabaseCheck(Check):
    """SELECT 1 (django-health-check's Database) and no unapplied migrations."""

    name = "database"
    critical = True

    def run(self):
        Database().run()
        executor = MigrationExecutor(connection)
        unapplied = executor.migration_plan(executor.loader.graph.leaf_nodes())
        if unapplied:
            raise ServiceUnavailable(f"{len(unapplied)} unapplied migration(s): run manage.py migrate")
        return "connected; all migrations applied"


@dataclasses.dataclass
class CacheCheck(Check):
    """A value written to the cache and read back (the flood limits and typing throttles live there)."""

    name = "cache"
    critical = True

    def run(self):
        key, value = f"health:{uuid.uuid4().hex}", uuid.uuid4().hex
        try:
            cache.set(key, value, timeout=max(1, int(self.budget)))
            stored = cache.get(key)
            cache.delete(key)
        except Exception as error:
            raise ServiceUnavailable(f"cache unavailable ({type(error).__name__})") from error
        if stored != value:
            raise ServiceUnavailable("the cache did not return the value written")
        if not settings.REDIS_URLS and not settings.REDIS_SENTINELS:
            return _per_process("local-memory cache")
        return "read back what it wrote"


@dataclasses.dataclass
class ChannelLayerCheck(Check):
    """A message sent to a fresh channel (on every shard) and received back."""

    name = "channel_layer"
    critical = True

    def run(self):
        try:
            probe = asyncio.run(asyncio.wait_for(round_trip(), self.budget))
        except TimeoutError:
            raise ServiceUnavailable(f"no round trip within {self.budget:g} s") from None
        except Exception as error:
            # The cause's type (a ConnectionError, say): the layer wraps every Redis error in LayerUnavailable.
            cause = type(error.__cause__ or error).__name__
            raise ServiceUnavailable(f"channel layer unavailable ({cause})") from error
        if not probe.shared:
            return _per_process("in-memory channel layer")
        return f"round trip through {probe.shards} Redis shard{'s' if probe.shards > 1 else ''}"


def _per_process(what):
    """The embedded defaults work in one process only: degraded in development or in a deployment that says
    it is one process (SUPPORTSITE_SINGLE_PROCESS), a failure in any other production."""
    detail = f"{what}: not shared between processes (set REDIS_URL)"
    if settings.DEBUG or settings.SINGLE_PROCESS:
        raise ServiceWarning(detail)
    raise ServiceUnavailable(detail)


@dataclasses.dataclass
class TelegramCheck(Check):
    """Telegram's view of the webhook (getWebhookInfo): where it delivers, what waits, the last error."""

    name = "telegram"

    def run(self):
        if settings.TELEGRAM_SANDBOX:
            raise Skipped("TELEGRAM_BOT_TOKEN is not set: this deployment talks to the Telegram sandbox")
        try:
            info = asyncio.run(asyncio.wait_for(fetch_webhook_info(self.budget), self.budget))
        except TimeoutError:
            raise ServiceUnavailable(f"Telegram did not answer within {self.budget:g} s") from None
        except Exception as error:
            raise ServiceUnavailable(f"getWebhookInfo failed ({type(error).__name__}: {error})") from error
        if not info.url:
            raise ServiceUnavailable("no webhook set: Telegram delivers no updates (run telegram_webhook set)")
        if info.url != settings.TELEGRAM_WEBHOOK_URL:
            raise ServiceUnavailable(
                "Telegram delivers updates to another URL than TELEGRAM_WEBHOOK_URL (see telegram_webhook info)"
            )
        pending = info.pending_update_count
        problems = []
        if pending > settings.HEALTH_PENDING_UPDATES_MAX:
            problems.append(f"{pending} updates waiting at Telegram (more than {settings.HEALTH_PENDING_UPDATES_MAX})")
        if info.last_error_date:
            age = timezone.now() - info.last_error_date
            if age < timedelta(seconds=settings.HEALTH_TELEGRAM_ERROR_WINDOW_SECONDS):
                problems.append(f"last delivery error {seconds(age)} ago: {info.last_error_message}")
        if problems:
            raise ServiceWarning("; ".join(problems))
        return f"webhook set; {pending} update{'' if pending == 1 else 's'} waiting"


@dataclasses.dataclass
class OutboxCheck(Check):
    """Replies queued and failed, the oldest queued one's age, and whether a task worker is alive."""

    name = "outbox"

    def run(self):
        now = timezone.now()
        queued, oldest, failed = outbox_backlog(failed_since=now - timedelta(days=1))
        detail = f"{queued} queued"
        if oldest is not None:
            detail += f" (oldest {seconds(now - oldest)})"
        detail += f", {failed} failed in 24 h"
        silence = timedelta(seconds=settings.HEALTH_WORKER_SILENCE_SECONDS)
        alive = WorkerHeartbeat.objects.filter(beat_at__gte=now - silence)
        if count := alive.count():
            detail += f"; {count} worker(s) alive"
            if stuck := alive.filter(busy_since__lt=now - silence).count():
                detail += f", {stuck} with every task thread busy for over {seconds(silence)}"
                if stuck == count:
                    raise ServiceWarning(f"{detail}: no worker is free to take tasks")
        else:
            waiting = DBTaskResult.objects.ready().order_by("enqueued_at").values_list("enqueued_at", flat=True).first()
            if waiting is not None and now - waiting > silence:
                raise ServiceUnavailable(f"{detail}; no task worker alive, a task has waited {seconds(now - waiting)}")
            raise ServiceWarning(f"{detail}; no task worker has reported in {seconds(silence)}")
        if oldest is not None and now - oldest > timedelta(seconds=settings.HEALTH_OUTBOX_MAX_AGE_SECONDS):
            raise ServiceWarning(f"{detail}: replies wait longer than {settings.HEALTH_OUTBOX_MAX_AGE_SECONDS} s")
        return detail


CHECKS = (DatabaseCheck, CacheCheck, ChannelLayerCheck, TelegramCheck, OutboxCheck)


@dataclasses.dataclass
class CheckResult:
    name: str
    status: str
    detail: str
    duration_ms: int
    critical: bool

    def as_json(self):
        return {"name": self.name, "status": self.status, "detail": self.detail, "duration_ms": self.duration_ms}


@dataclasses.dataclass
class HealthReport:
    checks: list

    @property
    def status(self):
        statuses = {check.status for check in self.checks}
        return FAIL if FAIL in statuses else DEGRADED if DEGRADED in statuses else OK

    @property
    def ready(self):
        """False when a critical check failed: this process cannot serve."""
        return not any(check.critical and check.status == FAIL for check in self.checks)

    def as_json(self):
        return {"status": self.status, "checks": [check.as_json() for check in self.checks]}


def _start(check):
    """Run ``check`` in a daemon thread: a check stuck on the network is abandoned at its deadline, and
    never keeps the process (the command, or daphne at shutdown) waiting for it."""
    future = concurrent.futures.Future()

    def target():
        started = time.perf_counter()
        try:
            outcome = (OK, check.run())
        except ServiceWarning as warning:
            outcome = (DEGRADED, warning.message)
        except Skipped as skipped:
            outcome = (SKIPPED, skipped.message)
        except HealthCheckException as failure:
            outcome = (FAIL, failure.message)
        except Exception as error:
            outcome = (FAIL, f"unexpected error ({type(error).__name__})")
        finally:
            connections.close_all()  # this thread's database connection goes back to the pool (G9)
        future.set_result((*outcome, time.perf_counter() - started))

    threading.Thread(target=target, name=f"health-{check.name}", daemon=True).start()
    return future


async def check_health(within=None, checks=CHECKS):
    """Run every check at once; return within ``within`` seconds (default HEALTH_TIMEOUT) whatever happens."""
    within = settings.HEALTH_TIMEOUT if within is None else within
    budget = timedelta(seconds=min(settings.HEALTH_CHECK_TIMEOUT, within))
    runs = []
    for check_class in checks:
        check = check_class()
        check.timeout = budget
        runs.append((check, asyncio.wrap_future(_start(check))))

    async def result_of(check, future):
        done, _ = await asyncio.wait([future], timeout=check.budget)
        if not done:
            detail = f"no answer within {check.budget:.1f} s"
            return CheckResult(check.name, FAIL, detail, round(check.budget * 1000), check.critical)
        status, detail, duration = future.result()
        return CheckResult(check.name, status, detail, round(duration * 1000), check.critical)

    return HealthReport(list(await asyncio.gather(*(result_of(check, future) for check, future in runs))))
