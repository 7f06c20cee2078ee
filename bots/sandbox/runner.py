"""Serve an aiohttp application from a background thread on a free port, so tests reach it over real HTTP.

The server gets its own event loop in its own thread: sync tests can call it, and async tests can block on
it (or run their own servers) without sharing a loop with it.
"""

import asyncio
import threading

from aiohttp import web

from .client import SandboxClient
from .server import create_app


class ServerThread:
    """An aiohttp application served on ``host`` (port 0 picks a free one) until ``stop()``."""

    def __init__(self, app, host="127.0.0.1", port=0):
        self.app = app
        self.host = host
        self.port = port
        self.url = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"aiohttp-{id(app)}", daemon=True)
        self._runner = None

    def start(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self):
        self._runner = web.AppRunner(self.app, shutdown_timeout=1, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        host, self.port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{self.port}"

    async def _shut_down(self):
        await self._runner.cleanup()
        # Requests still held by a "delay" fault: end them, rather than leave them pending on a closed loop.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()


class SandboxServer(ServerThread):
    """The Telegram sandbox in a background thread; ``create_app`` options (retry timing, …) pass through."""

    def __init__(self, host="127.0.0.1", port=0, **options):
        super().__init__(create_app(**options), host, port)
        self.default_token = options.get("default_token")

    def client(self, token=None):
        """A control-API client for ``token`` (the server's default token if omitted)."""
        return SandboxClient(self.url, token or self.default_token)
