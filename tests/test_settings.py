"""G13: with DEBUG off, settings refuse what each process would keep to itself (SQLite, the in-memory channel
layer and the local-memory cache), unless the deployment says it is a single process."""

import os
import subprocess
import sys

import pytest

from tests.conftest import BASE_DIR, SUBPROCESS_SECRET_KEY, WEBHOOK_SECRET

POSTGRES = {"DATABASE_URL": "postgres://supportsite@127.0.0.1:5432/supportsite"}
REDIS = {"REDIS_URL": "redis://127.0.0.1:6379/0"}
SQLITE = "SQLite (set DATABASE_URL to a PostgreSQL database)"
IN_MEMORY = "the in-memory channel layer and local-memory cache (set REDIS_URL or REDIS_SENTINELS)"


def check(**env):
    """``manage.py check`` in production mode with only ``env`` saying where the database and Redis are (the
    check connects to neither)."""
    unset = ("DATABASE_URL", "REDIS_URL", "REDIS_SENTINELS", "SUPPORTSITE_SINGLE_PROCESS", "DJANGO_SETTINGS_MODULE")
    base = {name: value for name, value in os.environ.items() if name not in unset}
    base |= {"DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": SUBPROCESS_SECRET_KEY, "DJANGO_ALLOWED_HOSTS": "localhost"}
    base |= {"TELEGRAM_BOT_TOKEN": "123:settings-test", "TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET}
    return subprocess.run(
        [sys.executable, "manage.py", "check"], env=base | env, cwd=BASE_DIR, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("env", "refused"),
    [({}, [SQLITE, IN_MEMORY]), (POSTGRES, [IN_MEMORY]), (REDIS, [SQLITE])],
    ids=["embedded defaults", "no Redis", "SQLite"],
)
def test_production_settings_refuse_what_one_process_keeps_to_itself(env, refused):
    finished = check(**env)

    assert finished.returncode != 0
    assert f"this would run on {' and on '.join(refused)}:" in finished.stderr
    assert "SUPPORTSITE_SINGLE_PROCESS=1" in finished.stderr


@pytest.mark.parametrize("env", [{"SUPPORTSITE_SINGLE_PROCESS": "1"}, POSTGRES | REDIS], ids=["one process", "shared"])
def test_production_settings_allow_one_process_or_shared_services(env):
    finished = check(**env)

    assert finished.returncode == 0, finished.stderr
