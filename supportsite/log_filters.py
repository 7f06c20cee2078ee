import logging

# Shorter secrets are not redacted: replacing a 3-character secret everywhere would mangle every log line.
MIN_REDACTED_LENGTH = 8


class RedactSecrets(logging.Filter):
    """Replace the bot token and the webhook secret in every log record, tracebacks included.

    A backstop: code should never log them, but libraries quote what they were given (PTB's
    InvalidToken, URLs with the token in them) and a leaked token gives away the bot.
    """

    def filter(self, record):
        from django.conf import settings

        secrets = [
            secret
            for secret in (settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_WEBHOOK_SECRET)
            if secret and len(secret) >= MIN_REDACTED_LENGTH
        ]
        try:
            message = record.getMessage()
        except Exception:
            return True  # a malformed log call: leave it to the handler, which reports it without raising
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in secrets:
            message = message.replace(secret, "[redacted]")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "[redacted]")
            if record.stack_info:
                record.stack_info = record.stack_info.replace(secret, "[redacted]")
        record.msg, record.args = message, None
        return True
