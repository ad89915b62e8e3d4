"""End-to-end fixtures: the sandbox and a real Airflow (api-server, scheduler, dag-processor and
triggerer on a PostgreSQL metadata database), once per session, whose connections point at it. DAG runs are triggered and approvals answered through the REST API, as in the UI."""

from __future__ import annotations

import pytest

from bisman_sandbox import launcher
from bisman_sandbox.airflow_local import AirflowClient, AirflowLocal
from bisman_sandbox.context import SandboxContext


@pytest.fixture(scope="session")
def sandbox() -> SandboxContext:
    ctx = SandboxContext.from_env()
    launcher.up(ctx)  # cheap when scripts/test.sh already brought it up
    return ctx


@pytest.fixture(scope="session")
def airflow(sandbox) -> AirflowClient:
    """A running Airflow for the session, stopped at the end."""
    af = AirflowLocal.from_env()
    af.up(extra_env=launcher.airflow_connection_env(sandbox))
    yield af.client()
    af.down()
