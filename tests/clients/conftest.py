"""The sandbox's services, up once per session, and its connections as AIRFLOW_CONN_* variables."""

from __future__ import annotations

import json

import pytest

from bisman_sandbox import launcher
from bisman_sandbox.context import SandboxContext


@pytest.fixture(scope="session")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    launcher.up(c, out=open("/dev/null", "w"))  # noqa: SIM115 - cheap when already up
    return c


@pytest.fixture
def airflow_conns(ctx, monkeypatch) -> dict[str, dict]:
    conns = launcher.connections(ctx)
    for conn_id, conn in conns.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conns
