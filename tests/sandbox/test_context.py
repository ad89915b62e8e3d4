"""The sandbox's ports: a rehearsal (offset 0, Airflow on 8080) and the test command's two sessions
(offset 2000, Airflow on 18080; offset 4000, Airflow on 19080) live side by side, so no port of one is
a port of another."""

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


def test_the_test_commands_two_sessions_share_no_port_with_each_other_or_a_rehearsal():
    other = _ports(4000, 19080)  # scripts/test.sh: OTHER_OFFSET, OTHER_AIRFLOW_PORT
    assert not other & _ports(2000, 18080)
    assert not other & _ports(0, 8080)
