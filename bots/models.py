from django.db import models


class TelegramUpdate(models.Model):
    """The inbox of processed Telegram updates: claiming an update_id here makes processing once-only."""

    update_id = models.BigIntegerField(unique=True)
    kind = models.CharField(max_length=32, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["received_at"])]

    def __str__(self):
        return f"update {self.update_id} ({self.kind})"
