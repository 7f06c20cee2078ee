"""``python -m bench [--quick] [--only NAME,...]``: start the stack, run the workloads, print the table and
write it into docs/performance.md. See docs/performance.md for what each workload measures."""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from . import datascale_run, machine, profiling, webhook
from .stack import Stack

WORKLOADS = ["webhook", "machine", "datascale"]
# Not in the default run: the profiler takes a share of the two cores.
EXTRA_WORKLOADS = ["profile"]


def main():
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller counts: a check in under 2 minutes")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads to run")
    parser.add_argument("--profile-name", default="webhook", help="bench/profiles/<name>.txt for --only profile")
    args = parser.parse_args()
    started = time.monotonic()

    def progress(message):
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    run_dir = Path(tempfile.mkdtemp(prefix="supportsite-bench-"))
    stack = Stack(
        postgres_url=os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        redis_url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
        run_dir=run_dir,
    )
    results = {}
    try:
        progress(f"database {stack.database}, Redis prefix {stack.prefix}, logs in {run_dir}")
        stack.create_database()
        stack.start_sandbox()
        if "webhook" in args.only:
            results["webhook"] = webhook.run(stack, count=1000 if args.quick else 10_000, progress=progress)
        if "machine" in args.only:
            customers, per_customer = (200, 2) if args.quick else (1000, 3)
            results["machine"] = machine.whole_machine(
                stack, customers=customers, per_customer=per_customer, progress=progress
            )
            results["first_contact"] = machine.first_contact_burst(stack, customers=300, progress=progress)
        if "datascale" in args.only:
            tickets = 10_000 if args.quick else 100_000
            results["datascale"] = datascale_run.run(stack, tickets=tickets, messages_per_ticket=10, progress=progress)
        if "profile" in args.only:
            count = 1000 if args.quick else 3000
            results["profile"] = profiling.profile_webhook(
                stack, count=count, name=args.profile_name, progress=progress
            )
    finally:
        stack.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
