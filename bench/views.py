"""The webhook's baseline: a bare Django async view that does one INSERT through Django's pool, storing its row
the way the webhook stores its own (on bots.db_executor's threads). bench.endpoints serves it three ways:
through Django's request cycle with no middleware (the goal's baseline), in front of Django's request
cycle as the webhook is (like with like), and behind the browser middleware (the earliest baseline)."""

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bots.db_executor import run_in_db_thread
from bots.models import TelegramUpdate
from supportsite.machine_requests import machine_endpoint

# The bare view's rows stay clear of the webhook's claims in the same table: no bot has this id.
BARE_BOT_ID = 0


async def insert(request):
    """Store the posted update's id as one row (the same table and row as the webhook's claim)."""
    update_id = json.loads(request.body)["update_id"]
    await run_in_db_thread(TelegramUpdate.objects.create, bot_id=BARE_BOT_ID, update_id=update_id, kind="bench")
    return JsonResponse({"ok": True})


bare_insert = csrf_exempt(require_POST(insert))
bare_insert_in_front = machine_endpoint(csrf_exempt(require_POST(insert)))
