"""python-telegram-bot's calls to the Bot API over aiohttp, in place of its default client (httpx).

A reply's send was a fifth of a worker's CPU, most of it httpx's own: in-process against the sandbox, PTB's
``send_message`` took 1.9 and 2.7 ms of CPU with its ``HTTPXRequest``, 0.76 and 0.71 ms with this; a worker
spends about a fifth less CPU per reply (docs/performance.md, "The worker's HTTP client"). aiohttp is the
project's already (the sandbox's server).

PTB's four timeouts keep their meaning, but for the write: aiohttp has no timeout per write, so a call is
bounded as a whole by the sum of the four (each phase within its own bound fits in it). What the Bot API is
sent here is a few form fields (replies go by text or by file_id), so the write is a socket buffer's worth;
an upload is refused.
"""

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest


class AiohttpRequest(BaseRequest):
    """A ``telegram.request.BaseRequest`` on an aiohttp session of ``connection_pool_size`` connections,
    opened by ``initialize`` on the caller's event loop (a session belongs to one loop)."""

    def __init__(self, *, connection_pool_size, connect_timeout, read_timeout, write_timeout, pool_timeout):
        self.connection_pool_size = connection_pool_size
        self.timeouts = dict(connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout)
        self.session = None

    @property
    def read_timeout(self):
        return self.timeouts["read"]

    async def initialize(self):
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(limit=self.connection_pool_size)
            # No cookies (the Bot API sets none) and no headers but PTB's own user agent.
            self.session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("User-Agent",)
            )

    async def shutdown(self):
        if self.session is not None:
            await self.session.close()

    async def do_request(
        self,
        url,
        method,
        request_data=None,
        read_timeout=BaseRequest.DEFAULT_NONE,
        write_timeout=BaseRequest.DEFAULT_NONE,
        connect_timeout=BaseRequest.DEFAULT_NONE,
        pool_timeout=BaseRequest.DEFAULT_NONE,
    ):
        if self.session is None or self.session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized.")
        if request_data is not None and request_data.contains_files:
            raise NetworkError("Uploading files is not supported here: send media by their Telegram file_id.")
        timeout = self._timeout(
            {"connect": connect_timeout, "read": read_timeout, "write": write_timeout, "pool": pool_timeout}
        )
        try:
            async with self.session.request(
                method,
                url,
                data=request_data.json_parameters if request_data is not None else None,
                headers={"User-Agent": self.USER_AGENT},
                timeout=timeout,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as error:  # aiohttp's own timeouts are TimeoutErrors too
            raise TimedOut from error
        except aiohttp.ClientError as error:
            raise NetworkError(f"aiohttp.{type(error).__name__}: {_without_url(error)}") from error

    def _timeout(self, given):
        """PTB's four timeouts (None: no limit), the defaults where a call gives none, as aiohttp's."""
        seconds = {
            name: self.timeouts[name] if value is BaseRequest.DEFAULT_NONE else value for name, value in given.items()
        }

        def within(*names):
            return None if any(seconds[name] is None for name in names) else sum(seconds[name] for name in names)

        return aiohttp.ClientTimeout(
            total=within("pool", "connect", "write", "read"),
            # aiohttp's connect covers waiting for a pooled connection and making a new one.
            connect=within("pool", "connect"),
            sock_connect=seconds["connect"],
            sock_read=seconds["read"],
        )


def _without_url(error):
    """What went wrong, without the request's URL, which holds the bot token."""
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{error.status}, {error.message}"
    if isinstance(error, aiohttp.InvalidURL):
        return "the Bot API URL is not valid"
    return str(error)
