from django.db import models


class TelegramUpdate(models.Model):
    """The inbox of processed Telegram updates: claiming (bot_id, update_id) here makes processing once-only.

    Claims are scoped to the bot (another bot on the same database numbers its updates independently) and
    kept for TELEGRAM_UPDATE_RETENTION_DAYS: Telegram redelivers for 24 hours, and after a week of silence
    it numbers the next update at random, so an older claim must never make a fresh update a "duplicate".
    """

    bot_id = models.BigIntegerField()
    update_id = models.BigIntegerField()
    kind = models.CharField(max_length=32, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot_id", "update_id"], name="one_claim_per_bot_update")]
        indexes = [models.Index(fields=["received_at"])]

    def __str__(self):
        return f"update {self.update_id} of bot {self.bot_id} ({self.kind})"


class DeadLetterUpdate(models.Model):
    """An update Telegram sent that python-telegram-bot could not parse, kept to be replayed after an upgrade.

    It is answered 200 (Telegram would otherwise redeliver it for a day and then drop it); ``body`` is the
    raw request body and may hold a customer's personal data, so it is linked to ``telegram_user_id`` when
    the body names one, for erasure.
    """

    bot_id = models.BigIntegerField()
    update_id = models.BigIntegerField()
    body = models.TextField()
    error = models.TextField()
    telegram_user_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    received_at = models.DateTimeField(auto_now_add=True)
    replay_attempts = models.PositiveIntegerField(default=0)
    # When a replay processed it; it is then kept only as a record.
    replayed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot_id", "update_id"], name="one_dead_letter_per_bot_update")]
        ordering = ["-received_at"]

    def __str__(self):
        return f"dead letter: update {self.update_id} of bot {self.bot_id}"
