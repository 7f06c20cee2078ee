"""python-telegram-bot's calls to the Bot API over aiohttp, in place of its default client (httpx), whose own
overhead was most of a reply's send in a worker (docs/performance.md, "The worker's HTTP client").

PTB's four timeouts bound the same phases, with two differences: aiohttp waits for a pooled connection and
makes a new one within one bound (so that wait may take the pool's and the connect's timeouts together),
and has no timeout per write, so a call is also bounded as a whole by the sum of the four. What the Bot API
is sent here is a few form fields (replies go by text or by file_id), a socket buffer's worth; an upload is
refused.

Like httpx, it follows no redirect (a Bot API call is a POST of its own), and takes a proxy from
HTTPS_PROXY / NO_PROXY. No error it raises quotes the request's URL, which holds the bot token (a
delivery's error is shown to agents); aiohttp's own is not chained to it, since its arguments quote the URL.
"""

import re

import aiohttp
import yarl
from aiohttp.helpers import get_env_proxy_for_url
from telegram.error import NetworkError, TelegramError, TimedOut
from telegram.request import BaseRequest


class AiohttpRequest(BaseRequest):
    """A ``telegram.request.BaseRequest`` on an aiohttp session of ``connection_pool_size`` connections,
    opened by ``initialize`` on the caller's event loop (a session belongs to one loop)."""

    def __init__(self, *, connection_pool_size, connect_timeout, read_timeout, write_timeout, pool_timeout):
        self.connection_pool_size = connection_pool_size
        self.timeouts = dict(connect=connect_timeout, read=read_timeout, write=write_timeout, pool=pool_timeout)
        self.session = None
        self.proxies = {}  # origin -> (proxy, its credentials), or (None, None)

    @property
    def read_timeout(self):
        return self.timeouts["read"]

    async def initialize(self):
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(limit=self.connection_pool_size)
            # No cookies (the Bot API sets none), and PTB's user agent rather than aiohttp's.
            self.session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
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
            raise TelegramError("Uploading files is not supported here: send media by their Telegram file_id.")
        timeout = self._timeout(
            {"connect": connect_timeout, "read": read_timeout, "write": write_timeout, "pool": pool_timeout}
        )
        proxy, proxy_auth = self._proxy_for(url)
        try:
            async with self.session.request(
                method,
                url,
                data=request_data.json_parameters if request_data is not None else None,
                headers={"User-Agent": self.USER_AGENT},
                timeout=timeout,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as error:  # aiohttp's own timeouts are TimeoutErrors too
            raise TimedOut(f"Timed out: {_described(error)}") from None
        except aiohttp.ClientError as error:
            raise NetworkError(_described(error)) from None

    def _proxy_for(self, url):
        """The proxy HTTPS_PROXY or HTTP_PROXY names for ``url`` unless NO_PROXY exempts its host, looked up once
        per origin: aiohttp's own lookup (``trust_env``) reads the whole environment on every call, which took
        a thirtieth of a worker's CPU (bench/profiles/worker-aiohttp.txt)."""
        scheme, _, rest = url.partition("://")
        origin = f"{scheme}://{rest.partition('/')[0]}"
        if origin not in self.proxies:
            try:
                self.proxies[origin] = get_env_proxy_for_url(yarl.URL(origin))
            except LookupError:
                self.proxies[origin] = (None, None)
        return self.proxies[origin]

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


URL = re.compile(r"\w+://\S+")


def _described(error):
    """What went wrong, without the request's URL."""
    if isinstance(error, aiohttp.ClientResponseError):
        detail = f"{error.status}, {error.message}"
    else:
        detail = URL.sub("<the Bot API URL>", str(error))
    return f"aiohttp.{type(error).__name__}: {detail}" if detail else f"aiohttp.{type(error).__name__}"
