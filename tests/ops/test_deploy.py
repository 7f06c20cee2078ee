"""The production layout of docs/deploy.md, run for real: Procfile.production under honcho (two daphne
processes, two workers, the sweep) behind nginx running the shipped configuration."""

import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

import httpx
import pytest

from tests.bots import factories
from tests.conftest import (
    BASE_DIR,
    WEBHOOK_SECRET,
    _spawn,
    free_port,
    free_ports_in_a_row,
    unique_bot_token,
    wait_until,
)
from tickets.models import Message

pytestmark = [pytest.mark.needs_nginx, pytest.mark.needs_postgres, pytest.mark.needs_redis]


def nginx_config(directory, ports, upstream_ports):
    """deploy/nginx as shipped, with the snippets where it includes them, loopback ports for its ports 443 and
    80 (443 without TLS: there is no certificate here), and the test's daphne processes as its upstream."""
    shipped = BASE_DIR / "deploy" / "nginx"
    for snippet in shipped.glob("supportsite-*.conf"):
        (directory / snippet.name).write_text(snippet.read_text().replace("/etc/nginx/snippets/", f"{directory}/"))
    site = (shipped / "supportsite.conf").read_text().replace("/etc/nginx/snippets/", f"{directory}/")
    servers = "".join(f"server 127.0.0.1:{upstream};" for upstream in upstream_ports)
    site = re.sub(
        r"upstream supportsite \{.*?\}", f"upstream supportsite {{ {servers} keepalive 8; }}", site, flags=re.S
    )
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{ports.tls};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{ports.plain};")
    site = re.sub(r"\n\s*(listen \[::\]|ssl_)[^;]*;", "", site)
    return f"""
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/error.log;
events {{}}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    {site}
}}
"""


@dataclass
class Ports:
    tls: int  # the site (443 in production)
    plain: int  # port 80: the load balancer's probes and redirects to HTTPS


@pytest.fixture
def production(process_env, tmp_path, sandbox):
    """honcho running Procfile.production (web=2, worker=2, sweep=1) and nginx in front; yields nginx's URL."""
    token = unique_bot_token()
    base = free_ports_in_a_row(2)
    env = process_env(token, PATH=f"{BASE_DIR / '.venv' / 'bin'}:{process_env(token)['PATH']}")
    processes = ["-c", "web=2,worker=2,sweep=1", "-p", str(base)]
    honcho = _spawn(
        [sys.executable, "-m", "honcho", "start", "-f", "Procfile.production", *processes], env, tmp_path / "honcho.log"
    )
    ports = Ports(tls=free_port(), plain=free_port())
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_config(tmp_path, ports, [base, base + 1]))
    nginx = subprocess.Popen([shutil.which("nginx"), "-c", str(config)], stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{ports.tls}"
    try:
        for upstream in (base, base + 1):
            wait_until(lambda u=upstream: _answers(f"http://127.0.0.1:{u}/healthz"), message=f"daphne on {upstream}")
        wait_until(lambda: _answers(f"{url}/healthz"), message="nginx")
        yield url, sandbox.client(token), tmp_path / "honcho.log", f"http://127.0.0.1:{ports.plain}"
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(15)
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(30)


def _answers(url):
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_two_servers_and_two_workers_behind_nginx_serve_the_webhook_and_deliver_replies(production):
    url, bot, log, _ = production
    bot.send_message(8800, "hello")  # the customer's chat, as Telegram knows it
    webhook = f"{url}/telegram/webhook/"
    headers = {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}

    for number in range(6):  # spread over both servers by nginx
        update = factories.update(8800, f"message {number}")
        assert httpx.post(webhook, json=update, headers=headers, timeout=30).status_code == 200
    oversize = httpx.post(webhook, content=b"x" * (2 * 1024 * 1024), headers=headers, timeout=30)
    ready = httpx.get(f"{url}/readyz", timeout=15)
    script = httpx.get(f"{url}/static/desk/desk.js", timeout=15)  # served by the application, through nginx

    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert oversize.status_code == 413 and "nginx" in oversize.text  # refused by nginx, before daphne
    assert ready.status_code == 200, ready.text
    assert Message.objects.filter(direction=Message.Direction.IN).count() == 6
    wait_until(lambda: [m["text"] for m in bot.chat(8800) if m.get("from", {}).get("is_bot")], message="the reply")
    served_by = set(re.findall(r"(web\.\d+)\s*\|.*\"POST /telegram/webhook/\" 200", log.read_text()))
    assert served_by == {"web.1", "web.2"}


def test_nginx_passes_a_websocket_upgrade_through(production):
    url, _, log, _ = production

    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
    headers["Sec-WebSocket-Key"] = "dGhlIHNhbXBsZSBub25jZQ=="

    with httpx.stream("GET", f"{url}/ws/inbox/", headers=headers, timeout=10):
        pass

    # daphne opens a WebSocket (whatever the application then does with it) only if nginx passed the
    # Upgrade and Connection headers on.
    wait_until(lambda: "WSCONNECTING /ws/inbox/" in log.read_text(), message="daphne to see the upgrade")


def test_port_80_answers_the_probes_by_any_host_and_sends_everything_else_to_https(production):
    _, _, _, plain = production
    by_address = {"Host": "10.0.0.5"}  # how a load balancer probes

    assert httpx.get(f"{plain}/healthz", headers=by_address, timeout=15).status_code == 200
    assert httpx.get(f"{plain}/readyz", headers=by_address, timeout=15).status_code == 200
    moved = httpx.get(f"{plain}/desk/", headers={"Host": "support.example.com"}, timeout=15)
    assert (moved.status_code, moved.headers["Location"]) == (301, "https://support.example.com/desk/")
