import json
import logging
import time

# The fields a log call may add with ``extra=`` that the JSON line carries (the webhook's request line).
EXTRA_FIELDS = ("update_id", "outcome", "status", "ms")


class JsonFormatter(logging.Formatter):
    """One JSON object per line (LOG_FORMAT=json): time, level, logger, message, the known extra fields
    and the traceback. Runs after RedactSecrets, so the message and traceback are already redacted."""

    converter = time.gmtime

    def format(self, record):
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in EXTRA_FIELDS if hasattr(record, name)})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)
