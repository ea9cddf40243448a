"""The gateway's log configuration: tracebacks keep their frames and lose their locals."""

from __future__ import annotations

import io
from typing import Any

import pytest
import structlog

from pilotline.gateway.logs import configure_logging

SECRET = "-".join(["secret", "of", "the", "plant"])  # the source never shows it whole


def fail_with_a_payload_in_a_local() -> None:
    payload = f'{{"power_w": 812.5, "{SECRET}": 1}}'.encode()
    raise ValueError(f"a failure with {len(payload)} bytes at hand")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_tracebacks_never_show_local_variables(fmt: Any) -> None:
    """A frame's locals hold payloads, tokens, passwords: structlog's ``dict_tracebacks``
    and rich's console traceback both print them unless told not to."""
    out = io.StringIO()
    saved = structlog.get_config()
    try:
        configure_logging(fmt, stream=out)
        log = structlog.get_logger("pilotline.test.tracebacks")  # its own: nothing cached
        try:
            fail_with_a_payload_in_a_local()
        except ValueError:
            log.exception("test.failed")
    finally:
        structlog.configure(**saved)
    text = out.getvalue()
    assert "fail_with_a_payload_in_a_local" in text  # the traceback is there
    assert "ValueError" in text
    assert SECRET not in text
