"""structlog, configured once: JSON lines in production, a readable console on a tty.

Every kind of log line has a stable event name (``mqtt.connected``, ``outbox.flushed``...);
context such as ``machine``, ``zone`` and ``collector`` is bound with contextvars per task.
Secrets are redacted by key name before rendering, so a token passed by mistake never leaves.
Tracebacks never show local variables (structlog's and rich's default): a frame's locals
hold payloads, tokens and passwords, which must not reach a log.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]

SECRET_KEYS = frozenset({"password", "token", "secret", "authorization", "private_key"})


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in event_dict:
        if key.lower() in SECRET_KEYS:
            event_dict[key] = "***"
    return event_dict


def json_tracebacks() -> structlog.processors.ExceptionRenderer:
    """``exc_info`` as structured frames, without locals (``dict_tracebacks`` shows them)."""
    return structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    )


def console_tracebacks(*, colors: bool) -> structlog.typing.ExceptionRenderer:
    """rich's traceback without locals where rich is installed, else the plain one
    (structlog would otherwise pick rich or better-exceptions, both showing locals)."""
    if importlib.util.find_spec("rich") is not None:
        return structlog.dev.RichTracebackFormatter(
            color_system="truecolor" if colors else None, show_locals=False
        )
    return structlog.dev.plain_traceback


def configure_logging(
    fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    out = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=console_tracebacks(colors=out.isatty())
        )
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:  # the console renderer formats exceptions itself
        processors.append(json_tracebacks())
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard library (uvicorn, paho, influxdb-client) go to
    # stderr at WARNING and above, so they cannot flood the gateway's own lines.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    # asyncua logs a traceback for every dropped connection; the OPC UA collector reports
    # connection life itself (opcua.* events and /health), so only asyncua's worst remains.
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
