"""The application's HTTP through HttpHook: base URL from the connection, retries, health probes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bisman_ops.clients import app_http

pytestmark = pytest.mark.sandbox


def test_base_url_comes_from_the_airflow_connection(ctx, airflow_conns):
    assert app_http.base_url() == f"http://127.0.0.1:{ctx.port('app')}"


def test_a_bare_host_takes_the_connection_schema(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SOME_API",
        json.dumps({"conn_type": "http", "host": "api.example.com", "schema": "https"}),
    )
    assert app_http.base_url("some_api") == "https://api.example.com"


def test_probe_reports_each_health_endpoint_of_a_healthy_app(airflow_conns):
    results = app_http.probe_health()
    assert [r["path"] for r in results] == list(app_http.HEALTH_PATHS)
    assert app_http.unhealthy(results) == []


def test_probe_names_endpoints_that_do_not_answer(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOTHING", json.dumps({"conn_type": "http", "host": "http://127.0.0.1", "port": 9})
    )
    results = app_http.probe_health("nothing", timeout=1)
    assert all(str(r["status"]).startswith("no answer") for r in results)
    assert len(app_http.unhealthy(results)) == len(app_http.HEALTH_PATHS)


class Flaky(BaseHTTPRequestHandler):
    """503 twice, then 200; counts requests."""

    calls = 0

    def do_GET(self):
        type(self).calls += 1
        status = 503 if type(self).calls <= 2 else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"busy")

    def log_message(self, *args):
        pass


def test_request_retries_gateway_errors_then_returns_the_answer(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "AIRFLOW_CONN_FLAKY",
        json.dumps({"conn_type": "http", "host": "http://127.0.0.1", "port": server.server_port}),
    )
    try:
        Flaky.calls = 0
        assert app_http.request("GET", "/x", conn_id="flaky", attempts=3).status_code == 200
        assert Flaky.calls == 3
        Flaky.calls = 0
        assert app_http.request("GET", "/x", conn_id="flaky", attempts=2).status_code == 503
        assert Flaky.calls == 2
    finally:
        server.shutdown()
