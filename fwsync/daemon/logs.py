"""The daemon's log lines: `text` (for people and journald) or `json` (one object a line).

Structured fields ride on the record as `extra={"fields": {...}}`; the reconcile line carries
what changed and why (trigger, plan counts, objects written, duration).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + \
        f".{int(created * 1000) % 1000:03d}Z"


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    return json.dumps(text) if (not text or any(c in text for c in ' "=,:')) else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {}) or {}
        parts = [_timestamp(record.created), record.levelname.lower(), record.getMessage()]
        parts += [f"{k}={_text_value(v)}" for k, v in fields.items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"time": _timestamp(record.created),
                                "level": record.levelname.lower(), "msg": record.getMessage()}
        data.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger("fwsync")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger
