import asyncio

from django.core.management.base import BaseCommand

from bots.application import get_application, shutdown_application
from bots.dead_letters import replay_pending


class Command(BaseCommand):
    help = (
        "Replay updates kept as dead letters (python-telegram-bot could not parse them) through the bot's "
        "handlers, e.g. after an upgrade. Each is processed once; the ones still refused keep their new error."
    )

    def add_arguments(self, parser):
        parser.add_argument("ids", nargs="*", type=int, help="Only these dead letters (default: every pending one).")

    def handle(self, *args, ids, **options):
        replayed, failed = asyncio.run(self.replay(ids))
        self.stdout.write(f"Replayed {replayed} dead letter(s); {failed} still refused.")

    async def replay(self, ids):
        try:
            return await replay_pending(await get_application(), ids)
        finally:
            await shutdown_application()
