"""The Telegram sandbox in a process of its own (``python -m bench.sandbox PORT``), without access logs,
so serving the bot's calls costs neither the servers' nor the load generator's CPU."""

import sys

from aiohttp import web

from bots.sandbox.server import create_app

if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
