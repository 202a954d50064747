"""Structured logging: one JSON object per line, always carrying the location id."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = {"exc_info", "stack_info", "stacklevel", "extra"}


class FieldsAdapter(logging.LoggerAdapter):
    """`log.info("state changed", old="qr_required", new="ready")`: keyword args become fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = {key: kwargs.pop(key) for key in list(kwargs) if key not in _RESERVED}
        kwargs["extra"] = {"fields": {**(self.extra or {}), **fields}}
        return msg, kwargs


class JsonFormatter(logging.Formatter):
    def __init__(self, static_fields: dict[str, str]) -> None:
        super().__init__()
        self._static = static_fields

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self._static,
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(static_fields: dict[str, str], level: str = "INFO") -> None:
    """Send every log record to stdout as JSON, with `static_fields` (the location) on each."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(static_fields))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The JSON line uses none of these; not collecting them makes every record cheaper (the
    # logging HOWTO's "Optimization"), and the services write one record per request.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (file, line, function) per record


def get_logger(name: str) -> FieldsAdapter:
    return FieldsAdapter(logging.getLogger(name), {})
