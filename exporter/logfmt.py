"""Log lines in logfmt on stderr, one line per event of note."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging"]


def _quote(value: str) -> str:
    if value and not any(c in value for c in ' "=\n\t'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ts += f".{int(record.msecs):03d}Z"
        line = f"ts={ts} level={record.levelname.lower()} msg={_quote(record.getMessage())}"
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
