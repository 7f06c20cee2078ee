"""Settings for supportsite, read from the environment (12-factor) with embedded defaults.

This is the only module that reads the environment. Without any variable set the project runs
on SQLite, the in-memory channel layer, the local-memory cache and the Telegram sandbox.
"""

import os
from pathlib import Path

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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
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
            # Seconds a request waits for a free connection before failing (503 at the webhook).
            "timeout": env_number("DATABASE_POOL_TIMEOUT", 10),
        }
        default_db["OPTIONS"].setdefault("connect_timeout", 5)
else:
    default_db = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
        # IMMEDIATE transactions take the write lock up front, so concurrent writers queue on the
        # busy timeout instead of failing with "database is locked" halfway through.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not memory, so tests can share it with threads and server processes.
        "TEST": {"NAME": BASE_DIR / "test-db.sqlite3"},
    }
DATABASES = {"default": default_db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer and cache -------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
# Prefixes every key this deployment writes, so several deployments (or test runs) can share one Redis.
REDIS_PREFIX = os.environ.get("REDIS_PREFIX", "supportsite")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels-redis blocks on Redis for up to 5 s waiting for a message; redis-py's
                # asyncio default socket_timeout of 5 s would kill idle consumers, so allow longer.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                "prefix": f"{REDIS_PREFIX}:asgi",
                "capacity": 1000,
                "expiry": 60,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": REDIS_PREFIX,
            "OPTIONS": {"socket_timeout": 5, "socket_connect_timeout": 5},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- The tickets' event history (G12) ---------------------------------------------------------------
# Events older than this are pruned; a client resuming from before them reloads instead.
TICKET_HISTORY_RETENTION_DAYS = env_number("TICKET_HISTORY_RETENTION_DAYS", 30)
# A customer writing within this many days after their ticket was resolved reopens it; later, a new one opens.
TICKET_REOPEN_DAYS = env_number("TICKET_REOPEN_DAYS", 7, float)

# --- Background tasks (the reply outbox) --------------------------------------------------------
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}

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
TELEGRAM_WEBHOOK_URL = os.environ.get("TELEGRAM_WEBHOOK_URL", "http://127.0.0.1:8000/telegram/webhook/")
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
    # Health probes come from the load balancer over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS",
    ",".join(f"{'https' if HTTPS else 'http'}://{host}" for host in ALLOWED_HOSTS if host != "*"),
)

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/admin/"

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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"redact_secrets": {"()": "supportsite.log_filters.RedactSecrets"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        # httpx logs every request URL at INFO, and Bot API URLs contain the bot token.
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
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
