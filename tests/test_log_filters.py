import logging

from supportsite.log_filters import RedactSecrets


def record(msg, *args, exc_info=None):
    return logging.LogRecord("test", logging.ERROR, __file__, 1, msg, args, exc_info)


def test_secrets_are_redacted_from_messages_and_tracebacks(settings):
    settings.TELEGRAM_BOT_TOKEN = "123456:very-secret-token"
    try:
        raise ValueError(f"The token `{settings.TELEGRAM_BOT_TOKEN}` was rejected")
    except ValueError as error:
        item = record("calling %s", f"/bot{settings.TELEGRAM_BOT_TOKEN}/getMe", exc_info=(type(error), error, None))

    assert RedactSecrets().filter(item)

    assert item.getMessage() == "calling /bot[redacted]/getMe"
    assert "very-secret-token" not in item.exc_text and "[redacted]" in item.exc_text


def test_a_malformed_log_call_is_left_to_the_handler_not_raised():
    item = record("two placeholders %s %s", 1)

    assert RedactSecrets().filter(item)


def test_every_handler_a_django_record_reaches_redacts_secrets():
    handlers, logger = [], logging.getLogger("django.request")
    while logger is not None:
        handlers += [handler for handler in logger.handlers if not type(handler).__module__.startswith("_pytest")]
        logger = logger.parent if logger.propagate else None

    assert handlers
    assert all(any(isinstance(item, RedactSecrets) for item in handler.filters) for handler in handlers)
