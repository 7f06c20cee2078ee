"""Loaded as a pytest plugin (``-p tests.devenv``) before pytest-django sets Django up.

The suite runs with development defaults (the sandbox bot, no secret key needed); a variable set
in the environment still wins, so CI can point the suite at PostgreSQL and Redis.
"""

import os

os.environ.setdefault("DJANGO_DEBUG", "1")
# The suite's own process never runs a task worker in the background (tests start the ones they want).
os.environ.setdefault("SUPPORTSITE_WORKER_IN_SERVER", "0")
# Keys this test run writes to a shared Redis (channel layer, cache) stay apart from any other run's.
os.environ.setdefault("REDIS_PREFIX", f"supportsite-test-{os.getpid()}")
