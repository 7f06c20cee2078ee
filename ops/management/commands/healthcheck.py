import asyncio
import json
import logging
import os
import sys

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from ops.health import FAIL, check_health


class Command(BaseCommand):
    help = (
        "Check the database (and migrations), the cache, the channel layer, Telegram's webhook and the outbox. "
        "Exit 0 when healthy or degraded, 1 when a check fails. Never runs longer than --timeout."
    )
    requires_system_checks = []  # the checks below are the point; Django's own would touch the database unbounded

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="Print the report as JSON.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=settings.HEALTH_TIMEOUT,
            help="Seconds the whole check may take (default: %(default)s); each check is bounded by "
            f"HEALTH_CHECK_TIMEOUT ({settings.HEALTH_CHECK_TIMEOUT:g} s) too.",
        )

    def handle(self, *args, as_json, timeout, **options):
        # The deadline counts from the start of the process (Python and Django take a second or more to
        # start), keeping a moment to print and exit.
        budget = max(timeout - seconds_since_process_start() - EXIT_MARGIN, MINIMUM_BUDGET)
        report = asyncio.run(check_health(budget))
        if as_json:
            self.stdout.write(json.dumps(report.as_json()))
        else:
            self.stdout.write(self.table(report))
        self.stdout.flush()
        let_go_of_database_pools()
        if report.status == FAIL:
            sys.exit(1)

    def table(self, report):
        style = {"ok": self.style.SUCCESS, "degraded": self.style.WARNING, "fail": self.style.ERROR}
        width = max(len(check.name) for check in report.checks)
        lines = [f"{'CHECK':<{width}}  {'STATUS':<8}  {'TIME':>7}  DETAIL"]
        for check in report.checks:
            status = style.get(check.status, str)(f"{check.status:<8}")
            lines.append(f"{check.name:<{width}}  {status}  {check.duration_ms:>4} ms  {check.detail}")
        lines.append(f"\nOverall: {style[report.status](report.status)}")
        return "\n".join(lines)


EXIT_MARGIN = 1.0
MINIMUM_BUDGET = 0.1


def seconds_since_process_start():
    """Wall-clock seconds since this process started (Linux); 0 where /proc cannot tell."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])
            now = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(now - started_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def let_go_of_database_pools():
    """Close the connection pools without waiting for their workers: one may be stuck connecting to a
    black hole, and a pool left to the garbage collector at exit waits up to 5 s for it."""
    # The pool warns about every worker it did not wait for: expected here, the process is ending.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    for connection in connections.all():
        # Only a pool that exists: the ``pool`` property would open a new one.
        if connection.alias in getattr(connection, "_connection_pools", {}):
            connection.pool.close(timeout=0)
