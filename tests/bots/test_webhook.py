"""The Telegram webhook over real HTTP against live daphne processes (G1, G2, G3, G4, G11)."""

import asyncio
import json
import socket

import httpx
import pytest
from django.db import connection

from bots.models import TelegramUpdate
from realtime.groups import INBOX
from tests.conftest import WEBHOOK_SECRET, drain, listen_to, wait_until
from tests.tcp_proxy import TcpProxy
from tickets.models import Customer, Message, Ticket

from . import factories


def post_all_at_once(url, bodies, secret="test-webhook-secret"):
    """POST every body to the webhook concurrently (of one server, or of ``url[i]`` for ``bodies[i]``)."""
    urls = url if isinstance(url, list) else [url] * len(bodies)

    async def run():
        limits = httpx.Limits(max_connections=len(bodies))
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        f"{server_url}/telegram/webhook/",
                        json=body,
                        headers={"X-Telegram-Bot-Api-Secret-Token": secret},
                    )
                    for server_url, body in zip(urls, bodies, strict=True)
                )
            )
        return [response.status_code for response in responses]

    return asyncio.run(run())


def outbound_texts():
    return list(Message.objects.filter(direction=Message.Direction.OUT).values_list("text", flat=True))


# --- G1: once-only initialisation ---------------------------------------------------------------------


def test_fifty_concurrent_cold_start_requests_initialise_the_bot_once(start_server, sandbox):
    server = start_server()
    updates = [factories.update(5000 + i, f"hello {i}") for i in range(50)]

    statuses = post_all_at_once(server.url, updates)

    assert statuses == [200] * 50
    assert len(sandbox.client(server.token).calls("getMe")) == 1
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 50


def test_a_failed_initialisation_is_not_kept_and_the_next_request_retries(start_server, sandbox):
    server = start_server()
    bot = sandbox.client(server.token)
    bot.add_fault("getMe", error_code=502, description="Bad Gateway", times=1)
    update = factories.update(6001, "are you there?")

    assert server.post_update(update).status_code == 503
    assert not Message.objects.exists()
    assert server.post_update(update).status_code == 200
    assert len(bot.calls("getMe")) == 2
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 1


def test_requests_waiting_for_a_failing_initialisation_share_it_and_fail_together(start_server, sandbox):
    server = start_server()
    bot = sandbox.client(server.token)
    # getMe fails after 5 s: every request of the burst arrives while that one attempt is under way.
    bot.add_fault("getMe", error_code=502, description="Bad Gateway", delay=5, times=1)
    updates = [factories.update(6100 + i, f"hello {i}") for i in range(40)]

    statuses = post_all_at_once(server.url, updates)

    assert statuses == [503] * 40
    assert len(bot.calls("getMe")) == 1
    assert server.post_update(factories.update(6200, "and now?")).status_code == 200
    assert len(bot.calls("getMe")) == 2


def test_a_rejected_bot_token_answers_503_and_never_reaches_the_log(start_server, sandbox):
    server = start_server()
    sandbox.client(server.token).add_fault("getMe", error_code=401, description="Unauthorized", times=None)

    response = server.post_update(factories.update(6003, "hi"))

    assert response.status_code == 503
    assert "Telegram rejected the bot token" in server.log()
    assert server.token not in server.log() + response.text


def test_the_bot_application_is_shut_down_when_the_server_stops(start_server):
    server = start_server()
    assert server.post_update(factories.update(6002, "hi")).status_code == 200

    server.stop()

    assert "Telegram bot application shut down." in server.log()


# --- G2, G4: exactly once, one customer, one ticket ---------------------------------------------------


@pytest.mark.needs_redis
def test_same_update_twenty_times_across_two_processes_stores_one_message_one_broadcast_one_auto_reply(
    start_server,
):
    first = start_server()
    second = start_server(token=first.token)
    update = factories.update(7001, "my order is late")
    inbox = listen_to(INBOX)

    statuses = post_all_at_once([first.url, second.url] * 10, [update] * 20)

    assert statuses == [200] * 20
    assert TelegramUpdate.objects.filter(update_id=update["update_id"]).count() == 1
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 1
    assert len(outbound_texts()) == 1
    # The view answers only after broadcasting, so every broadcast is already in the channel.
    message_events = [event for event in drain(inbox) if event["type"] == "message"]
    inbound_events = [e for e in message_events if e["message"]["direction"] == "in"]
    assert len(inbound_events) == 1
    assert inbound_events[0]["message"]["text"] == "my order is late"


def test_twenty_distinct_updates_from_one_new_user_at_once_give_one_customer_one_ticket(start_server):
    server = start_server()
    updates = [factories.update(8001, f"part {i}") for i in range(20)]

    statuses = post_all_at_once(server.url, updates)

    assert statuses == [200] * 20
    assert Customer.objects.count() == 1
    assert Ticket.objects.filter(status=Ticket.Status.OPEN).count() == 1
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 20
    assert len(outbound_texts()) == 1  # one "ticket opened" auto-reply


def test_a_sequential_redelivery_answers_200_and_does_nothing(start_server):
    server = start_server()
    update = factories.update(8002, "hello")

    assert server.post_update(update).status_code == 200
    assert server.post_update(update).status_code == 200

    assert Message.objects.count() == 2  # the message and its auto-reply, once


# --- G11: hostile input -----------------------------------------------------------------------------


def test_bad_requests_get_the_right_4xx_and_store_nothing(start_server):
    server = start_server()
    webhook = f"{server.url}/telegram/webhook/"
    good_secret = {"X-Telegram-Bot-Api-Secret-Token": "test-webhook-secret"}
    valid = factories.update(9001, "hi")
    cases = [
        ("missing secret", {"json": valid}, 403),
        ("a host not allowed", {"json": valid, "headers": {**good_secret, "Host": "evil.example"}}, 400),
        ("wrong secret", {"json": valid, "headers": {"X-Telegram-Bot-Api-Secret-Token": "guess"}}, 403),
        ("not JSON", {"content": b"{not json", "headers": good_secret}, 400),
        ("not UTF-8", {"content": b'{"update_id": "\xff"}', "headers": good_secret}, 400),
        ("a JSON array", {"json": [valid], "headers": good_secret}, 400),
        ("no update_id", {"json": {"message": valid["message"]}, "headers": good_secret}, 400),
        ("update_id not an integer", {"json": {**valid, "update_id": "1"}, "headers": good_secret}, 400),
        (
            "oversize body",
            {"content": json.dumps({**valid, "pad": "x" * 2_000_000}).encode(), "headers": good_secret},
            413,
        ),
        (
            "oversize chunked body without Content-Length",
            {"content": (b"x" * 65536 for _ in range(40)), "headers": good_secret},
            413,
        ),
    ]
    for name, request, expected in cases:
        response = httpx.post(webhook, timeout=30, **request)
        assert response.status_code == expected, f"{name}: {response.status_code} {response.text}"
        assert response.text.strip(), f"{name}: the refusal should say why"

    assert httpx.get(webhook).status_code == 405
    assert not TelegramUpdate.objects.exists()
    assert not Message.objects.exists()
    log = server.log()
    assert "test-webhook-secret" not in log
    assert server.token not in log


def test_the_webhook_is_served_without_the_browser_middleware_and_pages_keep_it(start_server):
    """supportsite.machine_requests: Telegram's POST skips sessions, CSRF, CSP and frame options (their
    thread hops were a fifth of an update's CPU); a page still gets them. Both get the security headers."""
    server = start_server()
    browser_headers = ("X-Frame-Options", "Content-Security-Policy", "Vary")

    webhook = server.post_update(factories.update(9101, "hi"))
    login_page = httpx.get(f"{server.url}/accounts/login/", timeout=30)

    assert webhook.status_code == 200
    assert [name for name in browser_headers if name in webhook.headers] == []
    assert webhook.headers["X-Content-Type-Options"] == "nosniff"
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 1
    assert login_page.status_code == 200
    assert [name for name in browser_headers if name in login_page.headers] == list(browser_headers)
    assert login_page.headers["X-Content-Type-Options"] == "nosniff"


def test_an_https_only_deployment_redirects_a_plain_http_webhook_post_and_stores_nothing(start_server):
    """The webhook skips the browser middleware, not SecurityMiddleware's checks: behind a TLS proxy
    (X-Forwarded-Proto) it is served with HSTS; over plain HTTP it is redirected like any request."""
    server = start_server(DJANGO_HTTPS="1")

    def post(update_id, text, **headers):
        headers["X-Telegram-Bot-Api-Secret-Token"] = "test-webhook-secret"
        update = factories.update(update_id, text)
        return httpx.post(f"{server.url}/telegram/webhook/", json=update, headers=headers, timeout=30)

    plain = post(9201, "over plain http")
    proxied = post(9202, "through the TLS proxy", **{"X-Forwarded-Proto": "https"})

    assert plain.status_code == 301
    assert plain.headers["Location"].startswith("https://")
    assert proxied.status_code == 200
    assert "Strict-Transport-Security" in proxied.headers
    assert list(Message.objects.filter(direction=Message.Direction.IN).values_list("text", flat=True)) == [
        "through the TLS proxy"
    ]


def test_unhandled_update_kinds_and_group_chats_are_accepted_and_ignored(start_server):
    server = start_server()
    ignored = [
        factories.update(9101, "hello group", chat_type="group"),
        {
            "update_id": factories.next_id(),
            "callback_query": {"id": "1", "from": factories.user(9102), "chat_instance": "x", "data": "d"},
        },
        {"update_id": factories.next_id(), "some_future_kind": {"anything": 1}},
    ]

    for update in ignored:
        assert server.post_update(update).status_code == 200

    assert not Message.objects.exists()
    log = server.log()
    assert f"Ignored update {ignored[0]['update_id']}: message in a group chat" in log
    assert f"Ignored update {ignored[1]['update_id']}: callback_query" in log


# --- What customers send ------------------------------------------------------------------------------


def test_text_no_database_can_store_as_sent_is_mended_and_stored_not_refused_for_ever(start_server):
    # A lone surrogate, which JSON can escape and UTF-8 cannot carry: a 5xx would have Telegram redeliver it
    # for a day, each time in vain.
    server = start_server()
    body = json.dumps(factories.update(9150, "hi \ud800 there"))  # ASCII: the surrogate as a \u escape

    response = httpx.post(
        f"{server.url}/telegram/webhook/",
        content=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET, "Content-Type": "application/json"},
        timeout=30,
    )

    assert response.status_code == 200

    assert Message.objects.get(direction=Message.Direction.IN).text == "hi \ufffd there"


@pytest.mark.parametrize("kind", sorted(factories.MEDIA))
def test_media_is_stored_as_attachment_metadata_with_a_readable_summary(start_server, kind):
    server = start_server()

    assert server.post_update(factories.update(9200, **factories.MEDIA[kind])).status_code == 200

    message = Message.objects.get(direction=Message.Direction.IN)
    assert message.attachment["kind"] == kind
    assert message.attachment["summary"]
    if kind == "photo":
        assert message.attachment["file_id"] == "photo-file"  # the largest size
        assert message.text == "my screen"  # the caption


def test_commands_and_replies(start_server):
    server = start_server()
    user_id = 9300

    assert server.post_update(factories.update(user_id, "/start")).status_code == 200
    first_ticket = Ticket.objects.get()
    assert "Hello, Alice!" in outbound_texts()[-1]

    assert server.post_update(factories.update(user_id, "/status")).status_code == 200
    assert outbound_texts()[-1] == f"Your ticket #{first_ticket.pk} is open."

    assert server.post_update(factories.update(user_id, "/new")).status_code == 200
    first_ticket.refresh_from_db()
    assert first_ticket.status == Ticket.Status.RESOLVED
    new_ticket = Ticket.objects.get(status=Ticket.Status.OPEN)
    assert outbound_texts()[-1].startswith(f"Ticket #{new_ticket.pk} is open.")

    original = Message.objects.filter(direction="in").last()
    replied_to = {**factories.message(user_id, "x"), "message_id": 1}
    reply = factories.update(user_id, "about that", reply_to_message=replied_to)
    assert server.post_update(reply).status_code == 200
    assert Message.objects.filter(direction="in").last().reply_to_telegram_message_id == 1
    assert original.ticket == new_ticket


def test_an_edited_message_updates_the_stored_text(start_server):
    server = start_server()
    sent = factories.update(9400, "helo")
    edit = {"update_id": factories.next_id(), "edited_message": {**sent["message"], "text": "hello", "edit_date": 1}}

    assert server.post_update(sent).status_code == 200
    assert server.post_update(edit).status_code == 200

    message = Message.objects.get(direction="in")
    assert message.text == "hello"
    assert message.edited_at is not None


# --- G3: nothing lost when the database is away -----------------------------------------------------


@pytest.mark.needs_postgres
def test_database_unavailable_answers_503_and_the_redelivery_stores_the_update_once(start_server, sandbox):
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)).start()
    database_url = f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}"
    server = start_server(DATABASE_URL=database_url, DATABASE_POOL_TIMEOUT=2, DATABASE_POOL_MIN_SIZE=0)
    bot = sandbox.client(server.token)
    bot.set_webhook(f"{server.url}/telegram/webhook/", "test-webhook-secret")
    assert server.post_update(factories.update(9500, "warm up")).status_code == 200

    proxy.cut()
    update = bot.send_message(9501, text="is anyone there?")
    wait_until(lambda: "503" in (bot.webhook_info().get("last_error_message") or ""), message="a 503 to the sandbox")
    assert bot.webhook_info()["pending_update_count"] == 1

    proxy.start()
    wait_until(lambda: bot.webhook_info()["pending_update_count"] == 0, message="the redelivery")
    assert TelegramUpdate.objects.filter(update_id=update["update_id"]).count() == 1
    assert Message.objects.filter(direction="in", text="is anyone there?").count() == 1


def test_a_form_body_reaches_the_application_unparsed_by_daphne(start_server):
    # Twisted parses a POST's form body (urlencoded or multipart) on the event loop before daphne calls the
    # application, and answers 400 itself to a multipart body it cannot parse; daphne's request class
    # (supportsite.body_limit) hands the body on as it came, so the webhook's own answer comes back.
    server = start_server()
    response = httpx.post(
        f"{server.url}/telegram/webhook/",
        content=b"not a multipart body",
        headers={"Content-Type": "multipart/form-data; boundary=x"},
        timeout=30,
    )

    assert response.status_code == 403  # the webhook's answer to a request without its secret


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 300000000\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n",
    ],
    ids=["declared length", "chunked"],
)
def test_an_oversize_body_is_refused_while_it_arrives_not_after(start_server, head):
    server = start_server()
    port = int(server.url.rsplit(":", 1)[1])
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=15) as client:
        client.sendall(b"POST /telegram/webhook/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head)
        try:
            # Far more than the limit, but never the whole body: the answer must not wait for the end.
            for _ in range(40):
                client.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if b"chunked" in head else chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already answered and closed
        answer = client.recv(4096)

    assert answer.startswith(b"HTTP/1.1 413")
    assert not Message.objects.exists()
