"""structlog, configured once: JSON lines in production, a readable console on a tty.

Every kind of log line has a stable event name (``mqtt.connected``, ``outbox.flushed``...);
context such as ``machine``, ``zone`` and ``collector`` is bound with contextvars per task.
Secrets are redacted by key name before rendering, so a token passed by mistake never leaves.
Tracebacks never show local variables (structlog's and rich's default): a frame's locals
hold payloads, tokens and passwords, which must not reach a log.

Everything else that writes to the log goes the same way, through one handler on the root
logger (structlog's ``ProcessorFormatter``): the libraries that use the standard library's
``logging`` (uvicorn, paho, asyncua, influxdb-client), ``warnings``, and exceptions nothing
caught. Their lines carry the event name ``library.log`` (or ``python.uncaught``), so in JSON
mode every line of the stream is a JSON object (``journalctl -o cat | jq`` never breaks).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]

LIBRARY_EVENT = "library.log"
HANDLER_NAME = "pilotline"

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


def library_event(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A library's line (uvicorn, paho, asyncua, influxdb-client, ``warnings``) gets the one
    stable event name ``library.log``; its free text becomes ``message``, beside ``logger``."""
    event_dict["message"] = event_dict.get("event")
    event_dict["event"] = LIBRARY_EVENT
    return event_dict


def configure_logging(
    fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """One handler on the root logger renders every line: the gateway's structlog events and
    the standard library's records (uvicorn, paho, asyncua, influxdb-client, ``warnings``,
    uncaught exceptions) alike, so a JSON stream holds nothing but JSON lines."""
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
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            redact_secrets,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, library_event],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # the console renderer formats exceptions itself
            *([json_tracebacks()] if use_json else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries log at WARNING and above, so they cannot flood the gateway's own lines;
    # asyncua's warnings among them (a dropped connection's traceback), as the docs promise.
    root.setLevel(max(logging.WARNING, numeric_level))
    # The gateway's events are filtered by structlog already (make_filtering_bound_logger).
    logging.getLogger("pilotline").setLevel(numeric_level)
    logging.captureWarnings(True)  # ``warnings`` as ``py.warnings`` records, not bare text
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    sys.unraisablehook = _unraisable


_log = structlog.get_logger("pilotline.process")


def _uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    _log.critical("python.uncaught", where="main", exc_info=(kind, value, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    where = f"thread {args.thread.name}" if args.thread is not None else "thread"
    _log.error(
        "python.uncaught",
        where=where,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _unraisable(args: Any) -> None:
    """An exception Python could not raise (in ``__del__``, a garbage-collected coroutine)."""
    value = args.exc_value
    _log.warning(
        "python.uncaught",
        where=f"unraisable: {args.err_msg or 'Exception ignored in'}: {args.object!r}",
        exc_info=(args.exc_type, value, args.exc_traceback) if value is not None else None,
    )
