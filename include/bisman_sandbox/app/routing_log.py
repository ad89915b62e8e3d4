"""One log line per routed database access, to a local file and to CloudWatch Logs.

Line format (the DAGs search for it with ``filter_log_events``)::

    db_route=replica tenant_id=42 request_id=5f0c...
    db_route=fallback tenant_id=42 request_id=5f0c... reason="OperationalError: ..."
    db_route=primary-write tenant_id=42 request_id=5f0c...

Filter on the quoted term (``"db_route=fallback"``): a fallback's reason may mention the replica.
Logging is best effort: a CloudWatch failure never fails the request, and after one the worker
stops trying for a few seconds so a dead endpoint does not slow every request.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

import boto3
from botocore.config import Config

from bisman_sandbox.app.settings import Settings, redact

ROUTES = ("replica", "fallback", "primary-write")
_BACKOFF_SECONDS = 5.0
_log = logging.getLogger(__name__)


def filter_pattern(route: str) -> str:
    """The CloudWatch Logs filter pattern that selects exactly the lines of ``route``."""
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; expected one of {', '.join(ROUTES)}")
    return f'"db_route={route}"'


def format_line(route: str, *, tenant_id: int, request_id: str, reason: str | None = None) -> str:
    line = f"db_route={route} tenant_id={tenant_id} request_id={request_id}"
    if reason:
        one_line = " ".join(reason.split()).replace('"', "'")[:300]
        line += f' reason="{one_line}"'
    return line


class RoutingLog:
    def __init__(self, settings: Settings):
        self._settings = settings
        self._lock = threading.Lock()
        self._client = None
        self._stream: str | None = None
        self._skip_until = 0.0

    def record(self, route: str, *, tenant_id: int, request_id: str, reason: str | None = None) -> str:
        if reason:
            reason = redact(reason, self._settings.secrets)
        line = format_line(route, tenant_id=tenant_id, request_id=request_id, reason=reason)
        self._to_file(line)
        self._to_cloudwatch(line)
        return line

    def _to_file(self, line: str) -> None:
        path = self._settings.routing_log_file
        if not path:
            return
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        try:
            # One write() on an O_APPEND file: lines from the workers do not interleave.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{stamp} pid={os.getpid()} {line}\n".encode())
            finally:
                os.close(fd)
        except OSError as exc:
            _log.warning("routing log file not written: %s", exc)

    def _to_cloudwatch(self, line: str) -> None:
        group = self._settings.app_log_group
        if not group or time.monotonic() < self._skip_until:
            return
        try:
            with self._lock:
                client = self._logs_client()
                try:
                    self._put(client, group, line)
                except client.exceptions.ResourceNotFoundException:
                    # The stream went with its group (deleted and created again): make it anew, once,
                    # as ECS's awslogs driver does, rather than lose this line.
                    self._stream = None
                    self._put(client, group, line)
        except Exception as exc:
            self._skip_until = time.monotonic() + _BACKOFF_SECONDS
            self._stream = None
            _log.warning("routing log not sent to CloudWatch (%s); retrying in %.0f s",
                         type(exc).__name__, _BACKOFF_SECONDS)

    def _put(self, client, group: str, line: str) -> None:
        client.put_log_events(logGroupName=group, logStreamName=self._ensure_stream(client, group),
                              logEvents=[{"timestamp": int(time.time() * 1000), "message": line}])

    def _logs_client(self):
        if self._client is None:
            self._client = boto3.session.Session().client(
                "logs",
                region_name=self._settings.aws_region,
                endpoint_url=self._settings.aws_endpoint_url,
                config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
            )
        return self._client

    def _ensure_stream(self, client, group: str) -> str:
        stream = f"app/{socket.gethostname()}/{os.getpid()}"
        if self._stream == stream:
            return stream
        try:
            client.create_log_stream(logGroupName=group, logStreamName=stream)
        except client.exceptions.ResourceAlreadyExistsException:
            pass
        self._stream = stream
        return stream
