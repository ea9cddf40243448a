"""The gateway's log configuration: tracebacks keep their frames and lose their locals; the
libraries' lines, warnings and uncaught exceptions share the gateway's one rendering."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import pytest
import structlog

from pilotline.gateway.logs import configure_logging

SECRET = "-".join(["secret", "of", "the", "plant"])  # the source never shows it whole


def fail_with_a_payload_in_a_local() -> None:
    payload = f'{{"power_w": 812.5, "{SECRET}": 1}}'.encode()
    raise ValueError(f"a failure with {len(payload)} bytes at hand")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_show_local_variables(fmt: Any, restored: None) -> None:
    """A frame's locals hold payloads, tokens, passwords: structlog's ``dict_tracebacks``
    and rich's console traceback both print them unless told not to."""
    out = io.StringIO()
    configure_logging(fmt, stream=out)
    log = structlog.get_logger("pilotline.test.tracebacks")  # its own: nothing cached
    try:
        fail_with_a_payload_in_a_local()
    except ValueError:
        log.exception("test.failed")
    text = out.getvalue()
    assert "fail_with_a_payload_in_a_local" in text  # the traceback is there
    assert "ValueError" in text
    assert SECRET not in text


@pytest.fixture
def restored() -> Iterator[None]:
    """The logging configuration a test changes, put back afterwards."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    hooks = sys.excepthook, threading.excepthook, sys.unraisablehook
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("pilotline").setLevel(logging.NOTSET)
        logging.captureWarnings(False)
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_libraries_warnings_and_the_gateway_share_one_json_stream(restored: None) -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    structlog.get_logger("pilotline.test.stream").info("test.event", machine="laser-01")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("asyncua.client").warning("close_secure_channel was called")
    # Libraries stay at WARNING whatever the gateway's level: they cannot flood the log, and
    # influxdb-client's and urllib3's debug lines carry the Authorization header.
    logging.getLogger("paho.mqtt.client").info("Sending PUBACK (Mid: 1)")
    logging.getLogger("influxdb_client.client.http").debug(f"Authorization: Token {SECRET}")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("an old API", DeprecationWarning, stacklevel=1)
    try:
        raise OSError("the socket went away")
    except OSError:
        logging.getLogger("influxdb_client").exception("write failed")
    lines = json_lines(out.getvalue())
    assert [(r["event"], r.get("logger"), r["level"]) for r in lines] == [
        ("test.event", None, "info"),
        ("library.log", "uvicorn.error", "warning"),
        ("library.log", "asyncua.client", "warning"),
        ("library.log", "py.warnings", "warning"),
        ("library.log", "influxdb_client", "error"),
    ]
    assert lines[0]["machine"] == "laser-01"
    assert lines[1]["message"] == "Invalid HTTP request received."
    assert "DeprecationWarning: an old API" in lines[3]["message"]
    assert SECRET not in out.getvalue()
    assert lines[4]["exception"][0]["exc_type"] == "OSError"  # structured, as ours are


def test_uncaught_exceptions_are_json_lines_too(restored: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    for hook in (sys.excepthook, _thread_hook):
        try:
            fail_with_a_payload_in_a_local()
        except ValueError as exc:
            hook(type(exc), exc, exc.__traceback__)
    lines = json_lines(out.getvalue())
    assert [(r["event"], r["where"]) for r in lines] == [
        ("python.uncaught", "main"), ("python.uncaught", "thread worker")
    ]
    assert all(r["exception"][0]["exc_type"] == "ValueError" for r in lines)
    assert SECRET not in out.getvalue()


def _thread_hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    thread = threading.Thread(name="worker")
    threading.excepthook(threading.ExceptHookArgs((kind, value, tb, thread)))  # type: ignore[call-arg]


def test_the_console_stays_readable(restored: None) -> None:
    out = io.StringIO()
    configure_logging("console", "info", stream=out)
    structlog.get_logger("pilotline.test.console").info("test.event", machine="laser-01")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    first, second = out.getvalue().splitlines()
    for part in ("test.event", "machine=laser-01"):
        assert part in first
    assert "{" not in first
    for part in ("library.log", "uvicorn.error", "Invalid HTTP request received."):
        assert part in second

