"""Logging setup: structlog configured once, at the entry point.

JSON lines for production (one event per line, easy to ship), a readable console renderer
when attached to a terminal. Library code only calls ``structlog.get_logger()``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog


class _Stderr:
    """Writes to whatever ``sys.stderr`` is at the time of the call (it may be replaced, e.g.
    by test harnesses, after logging was configured)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO"
) -> None:
    """Configure structlog and the stdlib root logger (for kafka-python's own messages)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    # kafka-python logs a lot at INFO; keep its warnings and errors.
    logging.basicConfig(
        level=max(numeric, logging.WARNING),
        handlers=[logging.StreamHandler(_Stderr())],
    )
