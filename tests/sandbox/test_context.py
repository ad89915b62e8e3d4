"""The sandbox's ports: a rehearsal (offset 0, Airflow on 8080) and a test run (offset 2000, Airflow on
18080) live side by side, so no port of one is a port of the other."""

from __future__ import annotations

from bisman_sandbox.airflow_local import AirflowLocal
from bisman_sandbox.context import SandboxContext


def _ports(offset: int, airflow_port: int) -> set[int]:
    sandbox = SandboxContext.from_env({"BISMAN_SANDBOX_PORT_OFFSET": str(offset)}).ports.values()
    airflow = AirflowLocal(home=None, port=airflow_port, executor="CeleryExecutor").ports()
    assert len(set(sandbox)) == len(list(sandbox)), "two services of one sandbox share a port"
    return set(sandbox) | set(airflow)


def test_a_rehearsal_and_a_test_run_never_share_a_port():
    assert not _ports(0, 8080) & _ports(2000, 18080)
