"""Log lines in logfmt on stderr, one line per event of note.

A log call may add fields of its own after the message with ``extra={"fields": {...}}``:
``log.debug("otlp request", extra={"fields": {"signal": "logs", "records": 3}})`` becomes
``... msg="otlp request" signal=logs records=3``.
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging", "LogfmtFormatter", "FIELDS"]

# The ``extra`` key whose mapping the formatter writes as key=value pairs.
FIELDS = "fields"


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\t'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} msg={_quote(record.getMessage())}"
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                line += f" {key}={_quote(_text(value))}"
        if record.exc_info:
            line += " error=" + _quote(self.formatException(record.exc_info))
        return line


def setup_logging(level: str = "info") -> None:
    """Sends the exporter's log (and waitress's) to stderr in logfmt."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
