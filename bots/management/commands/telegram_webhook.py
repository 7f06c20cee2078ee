import asyncio
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from telegram.error import TelegramError

from bots.application import get_application, shutdown_application

ALLOWED_UPDATES = ["message", "edited_message"]


class Command(BaseCommand):
    help = "Tell Telegram where to deliver updates (set), show what it knows (info), or stop delivery (delete)."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["set", "info", "delete"])
        parser.add_argument(
            "--drop-pending-updates", action="store_true", help="With set or delete: discard undelivered updates."
        )

    def handle(self, *args, action, drop_pending_updates, **options):
        try:
            asyncio.run(self.run(action, drop_pending_updates))
        except TelegramError as error:
            raise CommandError(
                f"Telegram refused: {error}. Check TELEGRAM_BOT_TOKEN and TELEGRAM_API_URL "
                f"({settings.TELEGRAM_API_URL})."
            ) from None

    async def run(self, action, drop_pending_updates):
        try:
            # In the try: an initialisation that fails keeps its HTTP clients (for a retry), closed here too.
            bot = (await get_application()).bot
            if action == "set":
                await bot.set_webhook(
                    url=settings.TELEGRAM_WEBHOOK_URL,
                    secret_token=settings.TELEGRAM_WEBHOOK_SECRET,
                    allowed_updates=ALLOWED_UPDATES,
                    max_connections=settings.TELEGRAM_WEBHOOK_MAX_CONNECTIONS,
                    drop_pending_updates=drop_pending_updates,
                )
                self.stdout.write(self.style.SUCCESS(f"Webhook set: @{bot.username} → {settings.TELEGRAM_WEBHOOK_URL}"))
            elif action == "delete":
                await bot.delete_webhook(drop_pending_updates=drop_pending_updates)
                self.stdout.write(self.style.SUCCESS(f"Webhook deleted for @{bot.username}."))
            await self.show_info(bot)
        finally:
            await shutdown_application()

    async def show_info(self, bot):
        info = await bot.get_webhook_info()
        configured = settings.TELEGRAM_WEBHOOK_URL
        lines = [
            f"Bot:              @{bot.username}",
            f"Webhook URL:      {info.url or '(none: Telegram is not delivering updates)'}",
            f"Expected URL:     {configured}{'' if info.url == configured else '   <- differs'}",
            f"Pending updates:  {info.pending_update_count}",
            f"Max connections:  {info.max_connections or '-'}",
            f"Allowed updates:  {', '.join(info.allowed_updates or []) or 'all'}",
        ]
        if info.last_error_date:
            when = info.last_error_date
            if isinstance(when, int | float):
                when = datetime.fromtimestamp(when, UTC)
            lines.append(f"Last error:       {when:%Y-%m-%d %H:%M:%S} UTC: {info.last_error_message}")
        else:
            lines.append("Last error:       none")
        self.stdout.write("\n".join(lines))
