"""The application API client the rollout and the rollbacks share: base URL from the Airflow
connection, and one probe of the health endpoints."""

from __future__ import annotations

import json

import pytest

from bisman_ops import app_api, config
from bisman_sandbox import app_server
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.launcher import up as sandbox_up

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    sandbox_up(c, out=open("/dev/null", "w"))  # noqa: SIM115 - cheap when already up
    return c


def test_base_url_comes_from_the_airflow_connection(ctx, monkeypatch):
    conn = app_server.connections(ctx)[config.APP_API_CONN_ID]
    monkeypatch.setenv(f"AIRFLOW_CONN_{config.APP_API_CONN_ID.upper()}", json.dumps(conn))
    assert app_api.base_url() == f"http://127.0.0.1:{ctx.port('app')}"


def test_base_url_without_a_scheme_defaults_to_https(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SOME_API", json.dumps({"conn_type": "http", "host": "api.example.com"}))
    assert app_api.base_url("some_api") == "https://api.example.com"


def test_probe_reports_each_health_endpoint_of_a_healthy_app(ctx):
    results = app_api.probe_health(f"http://127.0.0.1:{ctx.port('app')}")
    assert [r["path"] for r in results] == list(app_api.HEALTH_PATHS)
    assert {r["status"] for r in results} == {200}


def test_probe_names_endpoints_that_do_not_answer():
    # A port nothing listens on: every endpoint fails fast, none raises.
    results = app_api.probe_health("http://127.0.0.1:9", timeout=1)
    assert all(str(r["status"]).startswith("no answer") for r in results)
