"""Airflow on CeleryExecutor, as the compose file deploys it: a Redis broker, the metadata database as
result backend and two named workers on this host. Parallel tasks land on both workers; with one
worker lost mid-run (killed with its tasks, as a machine that dies), the run still
completes on the other."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest

from bisman_sandbox.airflow_local import AirflowLocal
from bisman_sandbox.process import is_running

PROBE = "bisman_celery_probe"
DAGS = Path(__file__).with_name("celery_dags")


@pytest.fixture(scope="module")
def celery_airflow():
    base = AirflowLocal.from_env()
    af = replace(base, home=base.home.with_name(base.home.name + "-celery"), port=base.port + 20,
                 executor="CeleryExecutor", celery_workers=2)
    request_env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # A worker that vanishes is noticed in seconds, not Airflow's default five minutes.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        # A message the lost worker had reserved but not started leaves its task queued: Airflow
        # requeues it after task_queued_timeout (600 s by default, longer than the run's wait).
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
    }
    af.down()
    # A fresh home: a queue or an executor's slots left by an earlier session must not count.
    shutil.rmtree(af.home, ignore_errors=True)
    try:
        af.up(extra_env=request_env)
    except Exception:
        af.down()
        raise
    yield af
    af.down()


def _hosts(client, run_id: str, states: tuple[str, ...]) -> dict[int, str]:
    return {ti["map_index"]: ti["hostname"] for ti in client.task_instances(PROBE, run_id)
            if ti["state"] in states and ti["hostname"]}


def test_parallel_tasks_land_on_both_workers_and_survive_one_lost(celery_airflow):
    af = celery_airflow
    client = af.client()
    client.wait_for_dag(PROBE)
    client.unpause(PROBE)
    run_id = client.trigger(PROBE)

    deadline = time.monotonic() + 180
    running: dict[int, str] = {}
    while time.monotonic() < deadline:
        running = _hosts(client, run_id, ("running",))
        if {"worker1@127.0.0.1", "worker2@127.0.0.1"} <= set(running.values()):
            break
        time.sleep(1)
    assert {"worker1@127.0.0.1", "worker2@127.0.0.1"} <= set(running.values()), running
    on_worker1 = {i for i, host in running.items() if host == "worker1@127.0.0.1"}

    assert af.stop_worker("worker1", lost=True)
    assert not is_running(af._processes, "worker1")
    assert client.wait_for_run(PROBE, run_id, timeout=420) == "success"

    finished = {ti["map_index"]: ti for ti in client.task_instances(PROBE, run_id)}
    assert {ti["state"] for ti in finished.values()} == {"success"}
    # What the lost worker was running was retried, and finished on the one left.
    for index in on_worker1:
        assert finished[index]["hostname"] == "worker2@127.0.0.1", finished[index]
        assert finished[index]["try_number"] > 1, finished[index]
