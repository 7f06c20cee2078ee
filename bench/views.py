"""The webhook's baseline: a bare Django async view that does one INSERT through Django's pool, served the
way the webhook is (supportsite.machine_requests), so the ratio compares like with like; and the same view
behind the browser middleware, the way the webhook was served before (the earlier runs' baseline)."""

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bots.models import TelegramUpdate
from supportsite.machine_requests import machine_endpoint

# The bare view's rows stay clear of the webhook's claims in the same table: no bot has this id.
BARE_BOT_ID = 0


async def insert(request):
    """Store the posted update's id as one row (the same table and row as the webhook's claim)."""
    update_id = json.loads(request.body)["update_id"]
    await TelegramUpdate.objects.acreate(bot_id=BARE_BOT_ID, update_id=update_id, kind="bench")
    return JsonResponse({"ok": True})


bare_insert = machine_endpoint(csrf_exempt(require_POST(insert)))
bare_insert_behind_middleware = csrf_exempt(require_POST(insert))
