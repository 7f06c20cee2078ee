"""``python -m bench [--quick] [--only NAME,...]``: start the stack, run the workloads, print the table and
(for a full run of every workload) write it into docs/performance.md. See docs/performance.md."""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from . import datascale_run, fanout, machine, profiling, report, webhook
from .stack import Stack

WORKLOADS = ["webhook", "fanout", "machine", "datascale"]
# Not in the default run: the profiler takes a share of the two cores, and the trace slows the server.
EXTRA_WORKLOADS = ["profile"]


def run_workloads(stack, workloads, quick, profile_label, progress):
    results = {}
    if "webhook" in workloads:
        # uvicorn's run is shorter: it answers which server to run, the daphne run carries the full count.
        counts = {"daphne": 300, "uvicorn": 300} if quick else {"daphne": 10_000, "uvicorn": 3_000}
        results["webhook"] = webhook.run(stack, counts=counts, rounds=2 if quick else 4, progress=progress)
    if "fanout" in workloads:
        clients, events, typing_seconds = (30, 20, 1) if quick else (200, 200, 5)
        results["fanout"] = fanout.run(
            stack,
            clients=clients,
            events=events,
            rate=20,
            typing_rate=20,
            typing_seconds=typing_seconds,
            progress=progress,
        )
    if "machine" in workloads:
        customers, per_customer = (60, 2) if quick else (300, 3)
        results["machine"] = [
            machine.whole_machine(
                stack, customers=customers, per_customer=per_customer, progress=progress, limits=limits
            )
            for limits in (machine.RAISED_LIMITS, {})
        ]
        results["ceiling"] = machine.ingest_ceiling(
            stack, customers=customers, per_customer=3 if quick else 10, rounds=2 if quick else 4, progress=progress
        )
        results["first_contact"] = machine.first_contact_burst(stack, customers=60 if quick else 300, progress=progress)
        results["backlog"] = [
            machine.queued_backlog(stack, customers=60 if quick else 300, telegram_latency=latency, progress=progress)
            for latency in (0, machine.TELEGRAM_LATENCY)
        ]
    if "datascale" in workloads:
        tickets = 5_000 if quick else 100_000
        results["datascale"] = datascale_run.run(stack, tickets=tickets, messages_per_ticket=10, progress=progress)
    if "profile" in workloads:
        results["profile"] = profiling.profile_webhook(
            stack, count=1000 if quick else 3000, name=f"webhook-{profile_label}", progress=progress
        )
        results["status_profile"] = profiling.profile_status(
            stack, count=1000 if quick else 3000, name=f"webhook-status-{profile_label}", progress=progress
        )
        results["worker_profile"] = profiling.profile_worker(stack, name=f"worker-{profile_label}", progress=progress)
    return results


def main():
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts: a check of about 2 minutes")
    parser.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated, of {WORKLOADS + EXTRA_WORKLOADS}"
    )
    parser.add_argument(
        "--profile-label", default="current", help="profile: writes bench/profiles/{webhook,worker}-LABEL.txt"
    )
    args = parser.parse_args()
    workloads = args.only.split(",")
    started = time.monotonic()

    def progress(message):
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    run_dir = Path(tempfile.mkdtemp(prefix="supportsite-bench-"))
    stack = Stack(
        postgres_url=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        run_dir=run_dir,
    )
    try:
        progress(f"database {stack.database}, Redis prefix {stack.prefix}, process logs in {run_dir}")
        stack.create_database()
        stack.start_sandbox()
        results = run_workloads(stack, workloads, args.quick, args.profile_label, progress)
        header = report.machine_and_versions(stack)
    finally:
        stack.close()
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    elapsed = time.monotonic() - started
    header.append(f"- Run: `make bench{' QUICK=1' if args.quick else ''}`, {elapsed:.0f} s, workloads {workloads}")
    text = report.render(results, header)
    print(text)
    if not args.quick and sorted(workloads) == sorted(WORKLOADS):
        plans = "\n".join(report.plans(results["datascale"]))
        report.write_doc(text, plans)
        progress(f"wrote {report.DOC}")
    progress(f"done in {elapsed:.0f} s; raw results in {run_dir / 'results.json'}")


if __name__ == "__main__":
    main()
