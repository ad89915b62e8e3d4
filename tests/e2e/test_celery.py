"""The session's Airflow on CeleryExecutor, as the compose file deploys it (scripts/test.sh sets
``BISMAN_AIRFLOW_EXECUTOR=CeleryExecutor``): a Redis broker, the metadata database as result backend
and two named workers on this host, which every other e2e and browser test then runs on. Parallel
tasks land on both workers; with one worker lost mid-run (killed with its tasks, as a machine that
dies), the run still completes on the other, and the worker comes back for the tests after."""

from __future__ import annotations

import time

import pytest

from bisman_sandbox.airflow_local import AirflowLocal
from bisman_sandbox.process import is_running
from tests.conftest import session_airflow_env

PROBE = "bisman_celery_probe"
WORKERS = {"worker1@127.0.0.1", "worker2@127.0.0.1"}


@pytest.fixture
def celery_airflow(airflow, sandbox):
    af = AirflowLocal.from_env()
    assert af.executor == "CeleryExecutor", "scripts/test.sh runs the session's Airflow on CeleryExecutor"
    yield af
    af.up(extra_env=session_airflow_env(sandbox))  # the lost worker back for the tests after this one
    assert is_running(af._processes, "worker1")


def _hosts(client, run_id: str, states: tuple[str, ...]) -> dict[int, str]:
    return {ti["map_index"]: ti["hostname"] for ti in client.task_instances(PROBE, run_id)
            if ti["state"] in states and ti["hostname"]}


def test_parallel_tasks_land_on_both_workers_and_survive_one_lost(celery_airflow, airflow):
    af, client = celery_airflow, airflow
    client.wait_for_dag(PROBE)
    client.unpause(PROBE)
    run_id = client.trigger(PROBE)

    deadline = time.monotonic() + 180
    running: dict[int, str] = {}
    while time.monotonic() < deadline:
        running = _hosts(client, run_id, ("running",))
        if set(running.values()) >= WORKERS:
            break
        time.sleep(1)
    assert set(running.values()) >= WORKERS, running
    on_worker1 = {i for i, host in running.items() if host == "worker1@127.0.0.1"}

    assert af.stop_worker("worker1", lost=True)
    assert not is_running(af._processes, "worker1")
    assert client.wait_for_run(PROBE, run_id, timeout=600) == "success"

    finished = {ti["map_index"]: ti for ti in client.task_instances(PROBE, run_id)}
    assert {ti["state"] for ti in finished.values()} == {"success"}
    # What the lost worker was running was retried, and finished on the one left.
    for index in on_worker1:
        assert finished[index]["hostname"] == "worker2@127.0.0.1", finished[index]
        assert finished[index]["try_number"] > 1, finished[index]
