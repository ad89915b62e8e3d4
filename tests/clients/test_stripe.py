"""Stripe through the official SDK: the connection's host with or without a scheme, and a key check
that tells a refused key from an unreachable API."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bisman_ops.clients import stripe as stripe_client

pytestmark = pytest.mark.sandbox


def test_api_base_of_a_host_without_a_scheme_is_https():
    assert stripe_client.api_base("api.stripe.com") == "https://api.stripe.com"
    assert stripe_client.api_base("http://127.0.0.1:1234/") == "http://127.0.0.1:1234"
    assert stripe_client.api_base(None) == stripe_client.DEFAULT_API_BASE


def test_the_sandbox_key_authenticates_against_the_emulator(airflow_conns):
    assert stripe_client.check_key(stripe_client.client_from_connection()).ok


class Refuses(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_refused_key_is_told_apart_from_an_unreachable_api(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        refused = stripe_client.check_key(
            stripe_client.make_client("sk_test_bad", f"http://127.0.0.1:{server.server_port}", retries=0)
        )
    finally:
        server.shutdown()
    assert (refused.ok, refused.status) == (False, 401)
    assert "sk_test_bad" not in refused.problem
    unreachable = stripe_client.check_key(
        stripe_client.make_client("sk_test_x", "http://127.0.0.1:9", timeout=1, retries=0)
    )
    assert (unreachable.ok, unreachable.status) == (False, None)
    assert "unreachable" in unreachable.problem


def test_a_connection_host_without_a_scheme_builds_a_working_client(monkeypatch, airflow_conns):
    conn = dict(airflow_conns["bisman_stripe"])
    conn["host"] = conn["host"].removeprefix("http://")
    conn["schema"] = "http"  # the emulator speaks plain HTTP; a bare host alone means https
    monkeypatch.setenv("AIRFLOW_CONN_STRIPE_BARE", json.dumps(conn))
    assert stripe_client.check_key(stripe_client.client_from_connection("stripe_bare")).ok
