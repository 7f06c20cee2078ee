"""The python-telegram-bot ``Application``: built in one place, initialised once per process.

PTB's ``Application.initialize()`` checks ``_initialized`` before an await and sets it after, so
two first requests arriving together would both run it (two getMe calls, two HTTP clients).
``get_application()`` runs one initialisation that every caller arriving meanwhile shares; a failed
initialisation is not kept, so the next caller tries again.

The Application is a per-process resource bound to the event loop that initialised it: daphne's
loop in a server process, and in a worker the loop of ``BotLoop`` (sync code cannot share daphne's
loop, and a new loop per call would orphan the bot's HTTP connections), which holds its own, so a
server that runs the worker in itself has one of each.
"""

import asyncio
import atexit
import logging
import sys
import threading

from django.conf import settings
from telegram import Bot
from telegram.error import InvalidToken, TelegramError
from telegram.ext import ApplicationBuilder

from .bot_api_http import AiohttpRequest

logger = logging.getLogger(__name__)


def build_application():
    """The bot Application for this deployment: webhook-driven (no Updater), API URL from settings. Updates
    reach our handlers without its dispatch (bots.handlers.process_update)."""
    return (
        ApplicationBuilder()
        .token(settings.TELEGRAM_BOT_TOKEN)
        .base_url(f"{settings.TELEGRAM_API_URL}/bot")
        .base_file_url(f"{settings.TELEGRAM_API_URL}/file/bot")
        .updater(None)
        .request(
            AiohttpRequest(
                connection_pool_size=settings.TELEGRAM_WEBHOOK_MAX_CONNECTIONS + 8,
                connect_timeout=5,
                read_timeout=10,
                write_timeout=10,
                pool_timeout=5,
            )
        )
        .build()
    )


# What to say when Telegram refuses the token; PTB's own message may quote the token.
TOKEN_REJECTED = "Telegram rejected the bot token: check TELEGRAM_BOT_TOKEN."  # noqa: S105


class BotNotReady(TelegramError):
    """The Application could not be initialised; the message is safe to log (no bot token in it)."""


async def fetch_webhook_info(request_timeout):
    """Telegram's getWebhookInfo for this bot, with a Bot of its own whose every timeout is ``request_timeout``
    (for the health check: it must not wait on the Application's initialisation or its connection pool)."""
    seconds = request_timeout
    request = AiohttpRequest(
        connection_pool_size=1,
        connect_timeout=seconds,
        read_timeout=seconds,
        write_timeout=seconds,
        pool_timeout=seconds,
    )
    bot = Bot(
        settings.TELEGRAM_BOT_TOKEN,
        base_url=f"{settings.TELEGRAM_API_URL}/bot",
        base_file_url=f"{settings.TELEGRAM_API_URL}/file/bot",
        request=request,
        get_updates_request=request,  # else PTB builds an httpx client of its own, never used
    )
    try:
        await request.initialize()
        return await bot.get_webhook_info()
    except InvalidToken:
        raise BotNotReady(TOKEN_REJECTED) from None
    finally:
        await request.shutdown()


class _ApplicationHolder:
    """This process's Application, initialised by one shared attempt at a time.

    Callers that arrive while an initialisation is under way await that same attempt (a shared task,
    not a lock each one retries behind), so after a failure they all fail together, at once; the
    failed attempt is not kept, and the next caller starts a new one.
    """

    def __init__(self, shut_down_with_daphne):
        self.application = None  # initialised and ready
        self.pending = None  # built, its initialisation failed: retried as is, so its HTTP clients are reused
        self.attempt = None  # the initialisation under way, shared by every caller waiting for it
        self.shut_down_with_daphne = shut_down_with_daphne

    async def get(self):
        if self.application is not None:
            return self.application
        if self.attempt is None:
            # No await between the check and the assignment: one attempt per loop, however many callers.
            self.attempt = asyncio.get_running_loop().create_task(self._initialise())
            self.attempt.add_done_callback(self._attempt_finished)
        # shield: a caller that gives up (its request cancelled) does not cancel the others' attempt.
        return await asyncio.shield(self.attempt)

    async def _initialise(self):
        application = self.pending or build_application()
        self.pending = application
        try:
            await application.initialize()
        except InvalidToken:
            # PTB's message quotes the token; never let it reach a log, a response or the database.
            raise BotNotReady(TOKEN_REJECTED) from None
        self.application, self.pending = application, None
        if self.shut_down_with_daphne:
            _shut_down_with_daphne()
        logger.info("Telegram bot application initialised as @%s.", application.bot.username)
        return application

    def _attempt_finished(self, attempt):
        self.attempt = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: each waiting caller has already received it

    async def shutdown(self):
        """Shut the Application down, and with it one whose initialisation is under way or failed: their HTTP
        connections belong to this event loop, and a later loop reusing them would fail on a closed one."""
        if self.attempt is not None:
            self.attempt.cancel()
            await asyncio.wait([self.attempt])
        application, self.application = self.application, None
        pending, self.pending = self.pending, None
        if application is not None:
            await application.shutdown()
            logger.info("Telegram bot application shut down.")
        if pending is not None:
            await pending.bot.shutdown()  # its HTTP clients: the Application itself never started


# The Application of the process's own event loop (daphne's in a server).
_holder = _ApplicationHolder(shut_down_with_daphne=True)


def _shut_down_with_daphne():
    """Under daphne, shut the Application down (closing its HTTP clients) when the server stops.

    daphne runs on Twisted's asyncio reactor and has no ASGI lifespan, so hook the reactor's shutdown.
    Elsewhere the owner of the loop shuts it down: BotLoop at exit, a command when it is done.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import defer, reactor

    if reactor.running:
        loop = asyncio.get_running_loop()
        reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: defer.Deferred.fromFuture(loop.create_task(shutdown_application()))
        )


async def get_application():
    """This process's initialised Application (initialising it on first use)."""
    return await _holder.get()


async def shutdown_application():
    await _holder.shutdown()


class BotLoop:
    """An event loop in a daemon thread, for calling the bot from sync code (the task worker).

    The worker's one event loop: its task threads also send their held broadcasts here (``call``), so
    the process keeps one loop and one set of Redis connections instead of a new one per task.
    """

    _lock = threading.Lock()
    _loop = None
    # An Application of its own, bound to this loop: a server that runs the task worker in itself
    # (SUPPORTSITE_WORKER_IN_SERVER) also has the webhook's, bound to daphne's loop.
    _holder = _ApplicationHolder(shut_down_with_daphne=False)

    @classmethod
    def run(cls, coroutine_function, timeout):
        """Run ``await coroutine_function(bot)`` on the bot's loop and return its result.

        After ``timeout`` seconds the call is cancelled and TimeoutError raised, so an abandoned call
        cannot go on sending behind its caller's back.
        """
        return cls.run_with_application(lambda application: coroutine_function(application.bot), timeout)

    @classmethod
    def run_with_application(cls, coroutine_function, timeout):
        """Like ``run``, with the Application itself (to process an update) instead of its bot."""

        async def call():
            return await coroutine_function(await cls._holder.get())

        return cls.call(call, timeout)

    @classmethod
    def call(cls, coroutine_function, timeout):
        """Run ``await coroutine_function()`` on the loop and return its result; cancelled after ``timeout``."""
        future = asyncio.run_coroutine_threadsafe(coroutine_function(), cls._get_loop())
        try:
            return future.result(timeout)
        except TimeoutError:
            if future.cancel():
                raise
            return future.result()  # it finished just as we gave up: the outcome is known

    @classmethod
    def _get_loop(cls):
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="telegram-bot-loop", daemon=True).start()
                atexit.register(cls._shut_down, loop)
                cls._loop = loop
        return cls._loop

    @classmethod
    def _shut_down(cls, loop):
        asyncio.run_coroutine_threadsafe(cls._holder.shutdown(), loop).result(10)
