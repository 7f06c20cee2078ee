"""Runs bench.datascale in a process of its own on the bench's database."""

import json
import subprocess
import sys

from .stack import BASE_DIR


def run(stack, *, tickets, messages_per_ticket, progress):
    stack.reset_data()
    progress(f"data scale: generating {tickets:,} tickets and {tickets * messages_per_ticket:,} messages, then timing")
    spec = {"tickets": tickets, "messages_per_ticket": messages_per_ticket}
    result = subprocess.run(
        [sys.executable, "-m", "bench.datascale", json.dumps(spec)],
        cwd=BASE_DIR,
        env=stack.env(),
        stdout=subprocess.PIPE,
        check=True,
        timeout=900,
    )
    return json.loads(result.stdout)
