from aiohttp import web
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from bots.sandbox.server import SANDBOX, create_app


class Command(BaseCommand):
    help = (
        "Serve the Telegram sandbox (a fake Bot API server with a customer chat page) for development. "
        "Refuses to run when a real TELEGRAM_BOT_TOKEN is configured."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.TELEGRAM_SANDBOX_PORT)
        parser.add_argument(
            "--set-webhook",
            action="store_true",
            help="Before serving, register TELEGRAM_WEBHOOK_URL with TELEGRAM_WEBHOOK_SECRET for the bot, "
            "as if it had called setWebhook.",
        )

    def handle(self, *args, host, port, set_webhook, **options):
        if not settings.TELEGRAM_SANDBOX:
            raise CommandError(
                "TELEGRAM_BOT_TOKEN is set, so this deployment talks to the real Telegram: the sandbox will not run. "
                "Unset TELEGRAM_BOT_TOKEN (development only) to use it."
            )
        token = settings.TELEGRAM_BOT_TOKEN
        app = create_app(default_token=token)
        if set_webhook:
            app.on_startup.append(self.register_webhook)
        web.run_app(app, host=host, port=port, print=lambda _: self.announce(host, port, set_webhook))

    async def register_webhook(self, app):
        app[SANDBOX].bot(settings.TELEGRAM_BOT_TOKEN).set_webhook(
            settings.TELEGRAM_WEBHOOK_URL,
            settings.TELEGRAM_WEBHOOK_SECRET,
            max_connections=settings.TELEGRAM_WEBHOOK_MAX_CONNECTIONS,
        )

    def announce(self, host, port, set_webhook):
        self.stdout.write(self.style.SUCCESS(f"Telegram sandbox on http://{host}:{port}/bot<token>/<method>"))
        self.stdout.write(f"Chat as a customer: http://{host}:{port}/")
        if set_webhook:
            self.stdout.write(f"Delivering updates to {settings.TELEGRAM_WEBHOOK_URL}")
        self.stdout.write("Quit with CONTROL-C.")
