"""The bot's HTTP client (bots.bot_api_http): PTB's calls over aiohttp, with PTB's timeouts and errors, and never
the bot token in an error (it is in every Bot API URL, and a delivery's error is shown to agents)."""

import asyncio
import re

import pytest
from telegram import Bot
from telegram.error import BadRequest, NetworkError, TelegramError, TimedOut

from bots.bot_api_http import AiohttpRequest
from tests.conftest import unique_bot_token


def request(**timeouts):
    seconds = {"connect_timeout": 5, "read_timeout": 10, "write_timeout": 10, "pool_timeout": 5} | timeouts
    return AiohttpRequest(connection_pool_size=4, **seconds)


async def call(base_url, token, method, *args, request=None, **kwargs):
    async with Bot(token, base_url=f"{base_url}/bot", request=request or globals()["request"]()) as bot:
        return await getattr(bot, method)(*args, **kwargs)


def test_a_call_gets_telegrams_answer_and_its_errors_as_ptbs(bot, sandbox):
    chat = 77
    bot.send_message(chat, "registers the chat")

    sent = asyncio.run(call(sandbox.url, bot.token, "send_message", chat, "Ticket #1 is open."))
    assert sent.text == "Ticket #1 is open." and sent.chat_id == chat

    bot.add_fault("sendMessage", error_code=400, description="Bad Request: chat not found")
    with pytest.raises(BadRequest, match="Chat not found"):
        asyncio.run(call(sandbox.url, bot.token, "send_message", chat, "again"))


def test_a_telegram_slower_than_the_read_timeout_is_a_timeout(bot, sandbox):
    # Slower than this read timeout (0.5 s), faster than the 10 s of the others: only that bound makes it fail.
    bot.add_fault("getMe", delay=5)
    with pytest.raises(TimedOut):
        asyncio.run(call(sandbox.url, bot.token, "get_me", request=request(read_timeout=0.5)))


def test_waiting_for_a_pooled_connection_times_out_without_quoting_the_token(bot, sandbox):
    async def scenario():
        one_connection = AiohttpRequest(
            connection_pool_size=1, connect_timeout=0.3, read_timeout=10, write_timeout=10, pool_timeout=0.3
        )
        async with Bot(bot.token, base_url=f"{sandbox.url}/bot", request=one_connection) as tg:
            await asyncio.to_thread(bot.add_fault, "getMe", delay=3)  # holds the only connection
            return await asyncio.gather(tg.get_me(), tg.get_me(), return_exceptions=True)

    # Either call may take the connection first: one answers, the other gives up waiting for it.
    [waited] = [result for result in asyncio.run(scenario()) if isinstance(result, Exception)]

    assert isinstance(waited, TimedOut)
    assert "aiohttp.ConnectionTimeoutError" in waited.message and bot.token not in waited.message


def answered_with(raw):
    """getMe against a server that answers every request with the bytes ``raw``: the error it raises (and,
    to check, the token it used) and the requests the server got."""
    token, requests = unique_bot_token(), []

    async def scenario():
        async def answer(reader, writer):
            requests.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(raw)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        async with server:
            with pytest.raises(TelegramError) as raised:
                await call(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", token, "get_me")
        return raised.value

    return asyncio.run(scenario()), token, requests


def test_a_broken_answer_is_a_network_error_that_does_not_quote_the_token():
    error, token, _ = answered_with(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n{}")

    assert isinstance(error, NetworkError) and "aiohttp.ClientResponseError" in error.message
    assert token not in error.message
    # aiohttp's own error quotes the URL: it is not chained, so no logged traceback shows it.
    assert error.__cause__ is None and error.__suppress_context__


def test_a_redirect_is_not_followed():
    error, _, requests = answered_with(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")

    assert isinstance(error, NetworkError) and "302" in error.message
    assert len(requests) == 1


def test_a_proxy_named_by_http_proxy_carries_the_calls(monkeypatch):
    requests = []

    async def scenario():
        async def proxy(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(re.search(rb"(?i)content-length: *(\d+)", head)[1]))
            requests.append(head.split(b"\r\n", 1)[0])
            body = b'{"ok": true, "result": {"id": 1, "is_bot": true, "first_name": "Bot", "username": "a_bot"}}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(body)
            )
            writer.write(body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(proxy, "127.0.0.1", 0)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with server:
            return await call("http://api.telegram.invalid", unique_bot_token(), "get_me")

    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)

    assert asyncio.run(scenario()).username == "a_bot"
    assert requests and all(line.startswith(b"POST http://api.telegram.invalid/bot") for line in requests)


def test_nothing_listening_is_a_network_error(unused_tcp_port):
    with pytest.raises(NetworkError, match="Cannot connect"):
        asyncio.run(call(f"http://127.0.0.1:{unused_tcp_port}", unique_bot_token(), "get_me"))


def test_an_upload_is_refused_with_what_to_do_instead(bot, sandbox):
    chat = 78
    bot.send_message(chat, "registers the chat")
    with pytest.raises(TelegramError, match="file_id") as raised:
        asyncio.run(call(sandbox.url, bot.token, "send_document", chat, b"%PDF-1.4", filename="a.pdf"))
    assert not isinstance(raised.value, NetworkError)  # a delivery fails at once, it does not retry for hours
    assert bot.calls("sendDocument") == []
