"""Logging: JSON or pretty lines, the delivery id carried from ingress into the job, and every
known secret value masked before a line is written."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from bot.redact import PROCESS_REDACTOR, Redactor

delivery_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("delivery_id", default=None)
job_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("job_id", default=None)


@contextmanager
def job_context(job_id: int, delivery_id: str | None) -> Iterator[None]:
    job_token = job_id_var.set(job_id)
    delivery_token = delivery_id_var.set(delivery_id)
    try:
        yield
    finally:
        job_id_var.reset(job_token)
        delivery_id_var.reset(delivery_token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.delivery_id = delivery_id_var.get()
        record.job_id = job_id_var.get()
        return True


class _RedactingFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(self.render(record))

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError


class JsonFormatter(_RedactingFormatter):
    def render(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("delivery_id", "job_id"):
            if getattr(record, key, None) is not None:
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class PrettyFormatter(_RedactingFormatter):
    def render(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        context = ""
        if getattr(record, "delivery_id", None):
            context += f" [{record.delivery_id}]"
        if getattr(record, "job_id", None) is not None:
            context += f" [job {record.job_id}]"
        line = f"{when} {record.levelname:<7} {record.name}{context}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "pretty", *, redactor: Redactor = PROCESS_REDACTOR,
                      stream=None) -> logging.Handler:  # type: ignore[no-untyped-def]
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else PrettyFormatter(redactor))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_codegenapp", False):
            root.removeHandler(existing)
    handler._codegenapp = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("aiohttp.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
