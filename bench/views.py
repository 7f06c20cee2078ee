"""The webhook's baseline: a bare Django async view that does one INSERT through Django's pool."""

import json

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bots.models import TelegramUpdate

# The bare view's rows stay clear of the webhook's claims in the same table: no bot has this id.
BARE_BOT_ID = 0


@csrf_exempt
@require_POST
async def bare_insert(request):
    """Store the posted update's id as one row (the same table and row as the webhook's claim)."""
    update_id = json.loads(request.body)["update_id"]
    await TelegramUpdate.objects.acreate(bot_id=BARE_BOT_ID, update_id=update_id, kind="bench")
    return JsonResponse({"ok": True})
