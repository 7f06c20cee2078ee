"""The admin for operators: updates python-telegram-bot could not parse, and their replay."""

from django.contrib import admin, messages

from .models import DeadLetterUpdate
from .tasks import replay_dead_letter


@admin.register(DeadLetterUpdate)
class DeadLetterUpdateAdmin(admin.ModelAdmin):
    """Dead letters, read-only; "Replay" hands the selected ones to the task worker, which processes
    them through the bot's handlers (after an upgrade of python-telegram-bot, say)."""

    list_display = ["update_id", "bot_id", "received_at", "short_error", "replay_attempts", "replayed_at"]
    list_filter = [("replayed_at", admin.EmptyFieldListFilter), "bot_id"]
    search_fields = ["update_id__exact", "telegram_user_id__exact"]
    fields = ["bot_id", "update_id", "telegram_user_id", "received_at", "error", "body", "replay_attempts"]
    fields += ["replayed_at"]
    readonly_fields = fields
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Error")
    def short_error(self, dead_letter):
        return dead_letter.error if len(dead_letter.error) <= 80 else f"{dead_letter.error[:79]}…"

    @admin.action(description="Replay through the bot's handlers", permissions=["change"])
    def replay(self, request, queryset):
        dead_letters = list(queryset.filter(replayed_at__isnull=True).values_list("pk", flat=True))
        for pk in dead_letters:
            replay_dead_letter.enqueue(pk)
        self.message_user(
            request,
            f"Queued {len(dead_letters)} dead letter(s) for replay by the task worker; "
            "refresh to see the outcome (replayed, or the new error).",
            messages.SUCCESS,
        )
