"""Writing lines to InfluxDB: a small interface, the real writer and a bundled fake.

``InfluxWriter.write`` is blocking (the drainer runs it in a worker thread) and raises one
exception type, ``WriteError``, whatever went wrong underneath. ``retryable`` decides what
the drainer does with the batch:

- retryable (the batch is kept and sent again, in order, after a backoff): connection
  errors, timeouts, 5xx, 429, and also 401/403/404: a wrong token or a missing bucket is
  an operator's problem to fix, and dropping data because of it would turn a
  misconfiguration into data loss;
- not retryable (the data itself is refused): other 4xx, such as 400 for a line InfluxDB
  cannot parse or a field type conflict, 413 for a batch too large, 422 for a point outside
  the bucket's retention. The drainer splits the batch to isolate the refused lines and
  moves only those to the store's ``dead_letter`` table.

Messages never carry the token (it is only ever in the request's Authorization header).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

RETRYABLE_STATUS = frozenset({401, 403, 404, 408, 429})
_BODY_LIMIT = 300


class WriteError(Exception):
    """A write failed; ``retryable`` says whether the same batch may succeed later."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.status = status


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUS


class InfluxWriter(Protocol):
    def write(self, lines: Sequence[str]) -> None:
        """Write lines (blocking); raise ``WriteError`` on any failure."""
        ...

    def close(self) -> None: ...


class InfluxClientWriter:
    """The real writer, on influxdb-client's synchronous write API (gzip, no HTTP retries:
    the drainer owns retries, so one write is one HTTP request)."""

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str | None,
        timeout_s: float = 10.0,
        *,
        ca_file: str | None = None,
    ) -> None:
        # Imported here: influxdb-client (and reactivex) take ~0.6 s to import, and a
        # gateway without an InfluxDB sink should not pay for it.
        from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415

        self.url = url
        self.org = org
        self.bucket = bucket
        self._precision: Any = WritePrecision.NS  # a str constant; the stubs say otherwise
        self._client = InfluxDBClient(
            url=url,
            token=token or "",  # "" sends no Authorization header at all
            org=org,
            timeout=int(timeout_s * 1000),
            enable_gzip=True,
            ssl_ca_cert=ca_file,  # None: the system's CAs; certificates are always verified
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        try:
            self._write_api.write(
                bucket=self.bucket,
                org=self.org,
                record="\n".join(lines),
                write_precision=self._precision,
            )
        except Exception as exc:  # translated into our one exception type
            raise translate_error(exc) from exc

    def close(self) -> None:
        self._write_api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:  # never show the token
        return f"InfluxClientWriter(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r})"


def translate_error(exc: BaseException) -> WriteError:
    """influxdb-client / urllib3 exceptions to ``WriteError``."""
    from influxdb_client.rest import ApiException  # noqa: PLC0415 - see __init__

    # influxdb-client reports a TLS failure as an ApiException with status 0 (no HTTP
    # answer at all): that is a connection problem, retried like one, never dead-lettered.
    if isinstance(exc, ApiException) and exc.status:
        status = int(exc.status)
        detail = _body_text(exc)
        return WriteError(
            f"HTTP {status}: {detail}", retryable=is_retryable_status(status), status=status
        )
    # Connection refused, DNS, timeouts, TLS, protocol errors: the server may come back.
    if isinstance(exc, ApiException):  # status 0: say what underneath had no answer
        cause = exc.__cause__ or exc.__context__
        why = _first_line(str(cause)) if cause is not None else str(exc.reason or "")
        return WriteError(f"no HTTP answer: {why}", retryable=True)
    return WriteError(f"{type(exc).__name__}: {_first_line(str(exc))}", retryable=True)


def _body_text(exc: Any) -> str:
    """The server's error message (InfluxDB: JSON ``message``), else the HTTP reason."""
    if getattr(exc, "response", None) is None:
        return _first_line(str(getattr(exc, "reason", None) or ""))
    message = getattr(exc, "message", None)
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return _first_line(str(message or getattr(exc, "reason", None) or ""))


def _first_line(text: str) -> str:
    text = text.strip().splitlines()[0] if text.strip() else ""
    return text[:_BODY_LIMIT]


class MemoryWriter:
    """The bundled fake: records what it is given, fails on request.

    - ``fail_next(n)`` makes the next ``n`` writes raise (retryable by default);
    - ``reject`` is a predicate on a line: a batch with such a line raises a non-retryable
      400 (like InfluxDB refusing a line it cannot parse) and none of it is recorded.
    """

    def __init__(self, reject: Callable[[str], bool] | None = None) -> None:
        self.lines: list[str] = []
        self.batches: list[list[str]] = []
        self.attempts = 0
        self.reject = reject
        self.closed = False
        self._fail: list[WriteError] = []
        self._lock = threading.Lock()

    def fail_next(self, n: int = 1, *, retryable: bool = True, status: int | None = None) -> None:
        with self._lock:
            for _ in range(n):
                self._fail.append(
                    WriteError("injected failure", retryable=retryable, status=status)
                )

    def write(self, lines: Sequence[str]) -> None:
        with self._lock:
            self.attempts += 1
            if self._fail:
                raise self._fail.pop(0)
            if self.reject is not None and any(self.reject(text) for text in lines):
                raise WriteError("HTTP 400: unable to parse", retryable=False, status=400)
            self.batches.append(list(lines))
            self.lines.extend(lines)

    def close(self) -> None:
        self.closed = True
