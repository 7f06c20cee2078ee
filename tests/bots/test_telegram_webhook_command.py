"""``manage.py telegram_webhook set|info|delete`` against the sandbox."""

import pytest
from django.core.management import CommandError, call_command

from bots import application
from tests.conftest import unique_bot_token


@pytest.fixture
def bot(sandbox, settings):
    settings.TELEGRAM_BOT_TOKEN = unique_bot_token()
    settings.TELEGRAM_API_URL = sandbox.url
    settings.TELEGRAM_WEBHOOK_URL = "https://support.example.com/telegram/webhook/"
    settings.TELEGRAM_WEBHOOK_SECRET = "command-test-secret"
    return sandbox.client(settings.TELEGRAM_BOT_TOKEN)


def test_set_registers_the_configured_url_secret_and_update_kinds(bot, capsys):
    call_command("telegram_webhook", "set")

    [call] = bot.calls("setWebhook")
    assert call["params"]["url"] == "https://support.example.com/telegram/webhook/"
    assert call["params"]["secret_token"] == "command-test-secret"
    assert call["params"]["allowed_updates"] == ["message", "edited_message"]
    assert bot.webhook_info()["url"] == "https://support.example.com/telegram/webhook/"
    output = capsys.readouterr().out
    assert "Webhook set" in output and "Pending updates:  0" in output
    assert "command-test-secret" not in output


def test_info_shows_pending_updates_and_the_last_error(bot, capsys):
    bot.set_webhook("http://127.0.0.1:9/unreachable", "s")
    bot.send_message(1, text="hello")
    bot.wait_until(lambda: bot.webhook_info().get("last_error_message"))

    call_command("telegram_webhook", "info")

    output = capsys.readouterr().out
    assert "Webhook URL:      http://127.0.0.1:9/unreachable" in output
    assert "<- differs" in output
    assert "Pending updates:  1" in output
    assert "Last error:" in output and "none" not in output.split("Last error:")[1]


def test_delete_stops_delivery(bot, capsys):
    call_command("telegram_webhook", "set")

    call_command("telegram_webhook", "delete")

    assert bot.webhook_info()["url"] == ""
    assert "Webhook deleted" in capsys.readouterr().out


def test_a_refusal_says_what_to_check(bot):
    bot.add_fault("getMe", error_code=401, description="Unauthorized", times=1)

    with pytest.raises(CommandError, match="Check TELEGRAM_BOT_TOKEN"):
        call_command("telegram_webhook", "info")
    # The failed initialisation's HTTP clients were closed with the command's event loop, not kept for a retry.
    assert application._holder.pending is None
