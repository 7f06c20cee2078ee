import logging


class RedactSecrets(logging.Filter):
    """Replace the bot token and the webhook secret in every log record, tracebacks included.

    A backstop: code should never log them, but libraries quote what they were given (PTB's
    InvalidToken, URLs with the token in them) and a leaked token gives away the bot.
    """

    def filter(self, record):
        from django.conf import settings

        secrets = [s for s in (settings.TELEGRAM_BOT_TOKEN, settings.TELEGRAM_WEBHOOK_SECRET) if s]
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        for secret in secrets:
            message = message.replace(secret, "[redacted]")
            if record.exc_text:
                record.exc_text = record.exc_text.replace(secret, "[redacted]")
        record.msg, record.args = message, None
        return True
