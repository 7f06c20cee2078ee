"""`make run` on its embedded defaults (SQLite, the in-memory channel layer, no Redis) keeps the whole live
loop: a reply sent over a desk socket gets its "sent" tick live from the task worker (G13)."""

import os
import re
import signal
import subprocess
import uuid

import httpx
import pytest
from django.conf import settings

from bots.sandbox.client import SandboxClient
from tests.conftest import BASE_DIR, free_port, wait_until

from .live import live_socket, log_in


@pytest.fixture
def make_run(tmp_path):
    """`make run` as a newcomer starts it, on free ports and a database of its own; stopped after the test."""
    web_port, sandbox_port = free_port(), free_port()
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "SUPPORTSITE_", "TELEGRAM_", "DATABASE_", "REDIS_"))
    }
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TELEGRAM_SANDBOX_PORT": str(sandbox_port),
    }
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        make = subprocess.Popen(
            ["make", "run", f"WEB_PORT={web_port}"],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the server and the sandbox stop with it
        )
    try:
        web, sandbox = f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{sandbox_port}"

        def up():
            if make.poll() is not None:
                pytest.fail(f"make run exited with {make.returncode}:\n{log_path.read_text()}")
            try:
                return httpx.get(f"{web}/healthz").is_success and httpx.get(f"{sandbox}/").is_success
            except httpx.TransportError:
                return False

        wait_until(up, timeout=120, message="make run's server and sandbox")
        password = re.search(rf"{web}/desk/  user: demo\s+password: (\S+)", log_path.read_text()).group(1)
        yield web, sandbox, password
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(30)


def test_a_reply_from_the_desk_gets_its_sent_tick_live_under_make_run(make_run):
    web, sandbox_url, password = make_run
    cookie = log_in(web, "demo", password)
    customer = SandboxClient(sandbox_url, settings.TELEGRAM_BOT_TOKEN)

    with live_socket(web, cookie, "/ws/inbox/") as inbox:
        customer.send_message(4001, "Hello, is this support?", first_name="Dana")
        arrived = inbox.receive_until(lambda event: event["type"] == "message")[-1]
    with live_socket(web, cookie, f"/ws/tickets/{arrived['ticket_id']}/") as desk:
        desk.resume(0)
        client_msg_id = str(uuid.uuid4())
        desk.send({"type": "message", "text": "Yes! How can we help?", "client_msg_id": client_msg_id})
        queued = desk.receive_until(lambda event: event.get("message", {}).get("client_msg_id") == client_msg_id)[-1]
        tick = desk.receive_until(
            lambda event: event["type"] == "delivery" and event["message_id"] == queued["message"]["id"]
        )[-1]

    assert queued["message"]["delivery_status"] == "queued"
    assert tick["status"] == "sent"
    assert "Yes! How can we help?" in [message.get("text") for message in customer.chat(4001)]
