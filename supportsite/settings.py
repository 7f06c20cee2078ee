"""Settings for supportsite, read from the environment (12-factor) with embedded defaults.

This is the only module that reads the environment. Without any variable set the project runs
on SQLite, the in-memory channel layer, the local-memory cache and the Telegram sandbox.
"""

import os
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use 1 or 0.")


def env_number(name, default, kind=int):
    value = os.environ.get(name) or default
    try:
        return kind(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not {'an integer' if kind is int else 'a number'}.") from None


def env_list(name, default):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it to a long random string in production, "
            "or set DJANGO_DEBUG=1 for local development (as `make run` does)."
        )
    SECRET_KEY = "insecure-development-key-only-for-DJANGO_DEBUG"  # noqa: S105

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]")

INSTALLED_APPS = [
    # Before daphne: its runserver then leaves static files to ServeStaticMiddleware, as in production.
    "servestatic",
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_tasks",
    "django_tasks_db",
    "tickets",
    "bots",
    "realtime",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "supportsite.csp.ContentSecurityPolicyMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "supportsite.urls"
ASGI_APPLICATION = "supportsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------------
# PostgreSQL goes through Django's psycopg 3 connection pool: under ASGI every request may run in
# a different thread, so persistent connections (CONN_MAX_AGE > 0) leak; the pool bounds them.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    default_db = dj_database_url.parse(DATABASE_URL, conn_max_age=0, conn_health_checks=True)
    if default_db["ENGINE"] == "django.db.backends.postgresql":
        default_db.setdefault("OPTIONS", {})["pool"] = {
            "min_size": env_number("DATABASE_POOL_MIN_SIZE", 2),
            "max_size": env_number("DATABASE_POOL_MAX_SIZE", 10),
            # Seconds a request waits for a free connection before failing (503 at the webhook). While the
            # database is down every request waits this long, so it stays well under Telegram's webhook
            # timeout (the sandbox's is 10 s); under load the waits are far shorter.
            "timeout": env_number("DATABASE_POOL_TIMEOUT", 5),
        }
        default_db["OPTIONS"].setdefault("connect_timeout", 5)
        # Behind PgBouncer in transaction mode a server connection is only ours for one transaction:
        # no server-side cursors (they outlive it) and no prepared statements (psycopg prepares a query
        # after five runs; PgBouncer before 1.21 cannot route them). docs/deploy.md explains the pool sizes.
        if env_bool("DATABASE_PGBOUNCER", False):
            default_db["DISABLE_SERVER_SIDE_CURSORS"] = True
            default_db["OPTIONS"]["prepare_threshold"] = None
else:
    default_db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # A file, not memory, so tests can share it with threads and server processes.
        "TEST": {"NAME": BASE_DIR / "test-db.sqlite3"},
    }
SQLITE = default_db["ENGINE"] == "django.db.backends.sqlite3"
if SQLITE:
    # IMMEDIATE transactions take the write lock up front, so concurrent writers queue on the
    # busy timeout instead of failing with "database is locked" halfway through.
    default_db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DATABASES = {"default": default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache -------------------------------------------------------------
# One Redis (REDIS_URL), several shards (REDIS_URL with comma-separated URLs: channels-redis spreads
# channels and groups over them by hashing their names, the cache spreads keys the same way), or
# masters found through Redis Sentinel (REDIS_SENTINELS, one master name per shard in
# REDIS_SENTINEL_MASTERS). Redis Cluster is not supported by channels-redis.
REDIS_URL = os.environ.get("REDIS_URL", "")
REDIS_URLS = env_list("REDIS_URL", "")
REDIS_SENTINELS = [
    (host, int(port)) for host, _, port in (entry.rpartition(":") for entry in env_list("REDIS_SENTINELS", ""))
]
REDIS_SENTINEL_MASTERS = env_list("REDIS_SENTINEL_MASTERS", "mymaster")
REDIS_SENTINEL_DB = env_number("REDIS_SENTINEL_DB", 0)
REDIS_PASSWORD = os.environ.get("REDIS_PASSWORD") or None  # the masters' password, with Sentinel
# Prefixes every key this deployment writes, so several deployments (or test runs) can share one Redis.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "supportsite")
# The pub/sub layer polls its subscriptions with reads of their own 0.1 s timeout, so an idle socket never
# meets socket_timeout (SPEC §6 is about the core layer's 5 s blocking reads); it bounds the commands.
CHANNEL_LAYER_CONNECTION = {"socket_timeout": 5, "socket_connect_timeout": 5}
CACHE_CONNECTION = {"SOCKET_TIMEOUT": 5, "SOCKET_CONNECT_TIMEOUT": 5}
if REDIS_SENTINELS:
    sentinel_kwargs = {"socket_timeout": 5, "socket_connect_timeout": 5}
    channel_layer_hosts = [
        {
            "sentinels": REDIS_SENTINELS,
            "master_name": master,
            "sentinel_kwargs": sentinel_kwargs,
            "db": REDIS_SENTINEL_DB,
            "password": REDIS_PASSWORD,
            **CHANNEL_LAYER_CONNECTION,
        }
        for master in REDIS_SENTINEL_MASTERS
    ]
    cache_location = [f"redis://{master}/{REDIS_SENTINEL_DB}" for master in REDIS_SENTINEL_MASTERS]
    cache_options = {
        **CACHE_CONNECTION,
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        "SENTINELS": REDIS_SENTINELS,
        "SENTINEL_KWARGS": sentinel_kwargs,
        "PASSWORD": REDIS_PASSWORD,
    }
elif REDIS_URLS:
    channel_layer_hosts = [{"address": url, **CHANNEL_LAYER_CONNECTION} for url in REDIS_URLS]
    cache_location, cache_options = REDIS_URLS, dict(CACHE_CONNECTION)
if REDIS_SENTINELS or REDIS_URLS:
    # Pub/sub channels are global to a Redis server, whatever database a client selects: the database number
    # is in the prefix, so deployments sharing a server on databases of their own stay apart.
    redis_db = REDIS_SENTINEL_DB if REDIS_SENTINELS else (urlsplit(REDIS_URLS[0]).path.strip("/") or "0")
    CHANNEL_LAYERS = {
        "default": {
            # channels-redis' pub/sub layer: at most once, which the history's resume makes whole (G12).
            "BACKEND": "realtime.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": channel_layer_hosts, "prefix": f"{REDIS_PREFIX}:{redis_db}:asgi"},
        }
    }
    # django-redis: its ShardClient spreads keys over the shards (every process agrees which key lives
    # where); with Sentinel, each shard's master is looked up through the Sentinels.
    if len(cache_location) > 1:
        cache_options["CLIENT_CLASS"] = "django_redis.client.ShardClient"
        # django-redis' own RedisCache passes client=None to the ShardClient, which warns on every call.
        warnings.filterwarnings("ignore", r".* on sharded client should not specify client", UserWarning)
    elif REDIS_SENTINELS:
        cache_options["CLIENT_CLASS"] = "django_redis.client.SentinelClient"
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": cache_location if len(cache_location) > 1 else cache_location[0],
            "KEY_PREFIX": REDIS_PREFIX,
            "OPTIONS": cache_options,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- One process or many (G13) ---------------------------------------------------------------------
# SQLite, the in-memory channel layer and the local-memory cache each belong to one process: server
# processes and workers on them would not hear of each other's events or share Telegram's flood limits.
# With DEBUG off they are refused unless the deployment says it is a single process, whose server then
# runs the task worker and the outbox sweep itself (supportsite/worker_in_server.py), so the replies'
# delivery ticks reach the sockets through the one in-memory layer. `make run` runs that way.
SINGLE_PROCESS = env_bool("SUPPORTSITE_SINGLE_PROCESS", False)
WORKER_IN_SERVER = env_bool("SUPPORTSITE_WORKER_IN_SERVER", SINGLE_PROCESS)
if not DEBUG and not SINGLE_PROCESS:
    per_process = [
        *(["SQLite (set DATABASE_URL to a PostgreSQL database)"] if SQLITE else []),
        *(
            ["the in-memory channel layer and local-memory cache (set REDIS_URL or REDIS_SENTINELS)"]
            if not (REDIS_URLS or REDIS_SENTINELS)
            else []
        ),
    ]
    if per_process:
        raise ImproperlyConfigured(
            f"DJANGO_DEBUG is off, and this would run on {' and on '.join(per_process)}: each process "
            "would keep its own, so processes would not see each other's events. Set what is named, or "
            "set SUPPORTSITE_SINGLE_PROCESS=1 if you run exactly one server process (it then runs the "
            "task worker itself: start no worker beside it)."
        )

# --- The tickets' event history (G12) ---------------------------------------------------------------
# Events older than this are pruned; a client resuming from before them reloads instead.
TICKET_HISTORY_RETENTION_DAYS = env_number("TICKET_HISTORY_RETENTION_DAYS", 30)
# A customer writing within this many days after their ticket was resolved reopens it; later, a new one opens.
TICKET_REOPEN_DAYS = env_number("TICKET_REOPEN_DAYS", 7, float)

# --- Background tasks (the reply outbox) --------------------------------------------------------
# django-tasks-db's queue, its rows stored with plain SQL (ops.task_backend).
TASKS = {"default": {"BACKEND": "ops.task_backend.DatabaseBackend", "QUEUES": ["default"]}}
# Tasks one `manage.py worker` process runs at once, each on a thread with a database connection of its own
# (a delivery mostly waits, on PostgreSQL and on Telegram's ~0.1 s answer): 8 keep one worker at Telegram's
# 30 messages/s. With the heartbeat's, the process needs WORKER_THREADS + 1 of DATABASE_POOL_MAX_SIZE.
WORKER_THREADS = env_number("WORKER_THREADS", 8)

# --- Housekeeping (ops.housekeeping: run by the workers every HOUSEKEEPING_INTERVAL_SECONDS) ------
# Claims of processed updates (bots.TelegramUpdate): Telegram redelivers for 24 hours, and numbers
# updates at random after a week of silence, so a week is both long enough and short enough.
TELEGRAM_UPDATE_RETENTION_DAYS = env_number("TELEGRAM_UPDATE_RETENTION_DAYS", 7)
# Finished task results (django-tasks' table), successful or failed.
TASK_RESULT_RETENTION_DAYS = env_number("TASK_RESULT_RETENTION_DAYS", 7)
HOUSEKEEPING_INTERVAL_SECONDS = env_number("HOUSEKEEPING_INTERVAL_SECONDS", 3600)

# --- Health (ops.health: manage.py healthcheck and GET /readyz) -----------------------------------
# Seconds one check may take, and the whole health check (the command's default --timeout; /readyz).
HEALTH_CHECK_TIMEOUT = env_number("HEALTH_CHECK_TIMEOUT", 3, float)
HEALTH_TIMEOUT = env_number("HEALTH_TIMEOUT", 10, float)
# Degraded above this many updates waiting at Telegram, or after a delivery error this recent (seconds).
HEALTH_PENDING_UPDATES_MAX = env_number("HEALTH_PENDING_UPDATES_MAX", 100)
HEALTH_TELEGRAM_ERROR_WINDOW_SECONDS = env_number("HEALTH_TELEGRAM_ERROR_WINDOW_SECONDS", 600)
# Degraded when the oldest queued reply is older than this (seconds).
HEALTH_OUTBOX_MAX_AGE_SECONDS = env_number("HEALTH_OUTBOX_MAX_AGE_SECONDS", 300)
# A worker silent this long (seconds) is gone; a ready task waiting this long with none alive fails.
HEALTH_WORKER_SILENCE_SECONDS = env_number("HEALTH_WORKER_SILENCE_SECONDS", 60)

# --- Telegram -----------------------------------------------------------------------------------
# Without a bot token the project talks to the Telegram sandbox (bots/sandbox), never to Telegram;
# production (DEBUG off) must name a real bot.
TELEGRAM_BOT_TOKEN = os.environ.get("TELEGRAM_BOT_TOKEN", "")
TELEGRAM_SANDBOX = not TELEGRAM_BOT_TOKEN
if TELEGRAM_SANDBOX:
    if not DEBUG:
        raise ImproperlyConfigured(
            "TELEGRAM_BOT_TOKEN is not set. Set the token BotFather gave you, or set DJANGO_DEBUG=1 "
            "to run against the Telegram sandbox."
        )
    TELEGRAM_BOT_TOKEN = "1000001:sandbox-token"  # noqa: S105  (the sandbox accepts any token)
TELEGRAM_SANDBOX_PORT = env_number("TELEGRAM_SANDBOX_PORT", 8081)
TELEGRAM_API_URL = os.environ.get(
    "TELEGRAM_API_URL",
    f"http://127.0.0.1:{TELEGRAM_SANDBOX_PORT}" if TELEGRAM_SANDBOX else "https://api.telegram.org",
).rstrip("/")
TELEGRAM_WEBHOOK_SECRET = os.environ.get("TELEGRAM_WEBHOOK_SECRET", "")
if not TELEGRAM_WEBHOOK_SECRET:
    if not TELEGRAM_SANDBOX:
        raise ImproperlyConfigured(
            "TELEGRAM_WEBHOOK_SECRET is not set: Telegram sends it with every update and the webhook "
            "refuses updates without it. Use 1-256 characters of A-Z, a-z, 0-9, _ and -."
        )
    TELEGRAM_WEBHOOK_SECRET = "sandbox-webhook-secret"  # noqa: S105
# The development default follows `make run WEB_PORT=…`.
TELEGRAM_WEBHOOK_URL = os.environ.get(
    "TELEGRAM_WEBHOOK_URL", f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}/telegram/webhook/"
)
TELEGRAM_WEBHOOK_MAX_CONNECTIONS = env_number("TELEGRAM_WEBHOOK_MAX_CONNECTIONS", 40)

# --- HTTP ---------------------------------------------------------------------------------------
# No request body may exceed this; supportsite.asgi enforces it while the body streams in, since
# daphne itself has no limit. Telegram updates are a few kilobytes.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_number("DJANGO_MAX_REQUEST_BODY", 1024 * 1024)

HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = env_number("DJANGO_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    ",".join(f"{'https' if HTTPS else 'http'}://{host}" for host in ALLOWED_HOSTS if host != "*"),
)

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/desk/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The server serves the apps' static files itself (the desk's script and styles, the admin's), straight
# from the apps: no collectstatic step and no separate file server in any deployment. ServeStatic's
# middleware is async, so it adds no thread hop to the webhook.
SERVESTATIC_USE_FINDERS = True

# --- The desk (tickets' agent pages) ----------------------------------------------------------------
# Attachments the desk fetches from Telegram for an agent (bots.attachments): larger ones are refused.
# Telegram's getFile serves at most 20 MB.
DESK_ATTACHMENT_MAX_BYTES = env_number("DESK_ATTACHMENT_MAX_BYTES", 20 * 1024 * 1024)

# plain: one readable line per record; json: one JSON object per line, for a log pipeline.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain")
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "supportsite.log_format.JsonFormatter"},
    },
    "filters": {"redact_secrets": {"()": "supportsite.log_filters.RedactSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # Only through the root's handler, which redacts: Django's own for "django" (its console, in DEBUG)
        # would print every record a second time, unredacted; its mail_admins goes too (ADMINS is not set).
        "django": {"handlers": []},
        # httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        # A worker in the server polls in short batches, each logging its start and end at INFO;
        # `manage.py worker` sets its own level.
        "django_tasks_db": {"level": "WARNING"},
    },
}

# Outbound delivery (bots.outbox, bots.delivery): retries, backoff and Telegram's flood limits.
# Transient errors (network, 5xx, a rejected token) are retried for this long before a reply fails: long
# enough to ride out an outage or a token rotation. 429s wait retry_after and do not count.
TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS = env_number("TELEGRAM_DELIVERY_RETRY_WINDOW_SECONDS", 6 * 60 * 60, float)
TELEGRAM_DELIVERY_BACKOFF_SECONDS = env_number("TELEGRAM_DELIVERY_BACKOFF_SECONDS", 2, float)
TELEGRAM_DELIVERY_BACKOFF_CAP_SECONDS = env_number("TELEGRAM_DELIVERY_BACKOFF_CAP_SECONDS", 300, float)
# How long one attempt may hold a reply before the sweep may consider its worker dead.
TELEGRAM_DELIVERY_LEASE_SECONDS = env_number("TELEGRAM_DELIVERY_LEASE_SECONDS", 60)
# Telegram's flood limits: about one message a second per chat, 30 a second in all.
TELEGRAM_CHAT_INTERVAL_SECONDS = env_number("TELEGRAM_CHAT_INTERVAL_SECONDS", 1, float)
TELEGRAM_GLOBAL_MESSAGES_PER_SECOND = env_number("TELEGRAM_GLOBAL_MESSAGES_PER_SECOND", 30)
# The head of a chat's queue due this long without a live task lost it (or its worker); the sweep re-drives it.
OUTBOX_STRANDED_AFTER_SECONDS = env_number("OUTBOX_STRANDED_AFTER_SECONDS", 120)
