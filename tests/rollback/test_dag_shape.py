"""The rollback DAGs as declarations (no scheduler): validate, then lock, then announce; waits are
sensors with timeouts; approvals are the change layer's; every clean-up runs as a teardown."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from bisman_ops.change.approval import ChangeApproval

DAGS = Path(__file__).resolve().parents[2] / "dags"
ROLLBACKS = (
    "bisman_rollback_application.py",
    "bisman_rollback_database.py",
    "bisman_rollback_infrastructure.py",
)
CHANGING = ("update_service", "take_pre_rollback_snapshot", "restore_snapshot", "switch_traffic",
            "apply_approved_plan")


@pytest.fixture(scope="module", params=ROLLBACKS)
def dag(request):
    return runpy.run_path(str(DAGS / request.param))["dag"]


def upstream_closure(dag, task_id: str) -> set[str]:
    seen, todo = set(), [task_id]
    while todo:
        for up in dag.get_task(todo.pop()).upstream_task_ids:
            if up not in seen:
                seen.add(up)
                todo.append(up)
    return seen


def test_the_request_is_validated_before_the_lock_and_the_lock_taken_before_anyone_is_told(dag):
    assert "validate_request" in upstream_closure(dag, "acquire_change_lock")
    assert "acquire_change_lock" in upstream_closure(dag, "notify_team_of_start")
    assert "acquire_change_lock" not in upstream_closure(dag, "validate_request")


def test_every_change_comes_after_the_announcement(dag):
    changing = [t for t in dag.tasks if t.task_id in CHANGING]
    assert changing
    for task in changing:
        assert "notify_team_of_start" in upstream_closure(dag, task.task_id)


def test_waits_are_reschedule_sensors_and_no_deadline_travels_in_xcom(dag):
    sensors = [t for t in dag.tasks if t.task_type.endswith("SensorOperator") or hasattr(t, "poke_interval")]
    assert sensors
    for s in sensors:
        assert s.mode == "reschedule" and s.timeout and s.poke_interval


def test_the_lock_and_the_report_are_teardowns(dag):
    assert dag.get_task("release_change_lock").is_teardown
    assert dag.get_task("write_run_report").is_teardown
    assert dag.get_task("acquire_change_lock").is_setup


def test_the_database_switch_is_approved_by_the_change_layer_and_resumed_by_a_teardown():
    dag = runpy.run_path(str(DAGS / "bisman_rollback_database.py"))["dag"]
    approval = dag.get_task("approve_traffic_switch")
    assert isinstance(approval, ChangeApproval)
    assert "approve_traffic_switch" in dag.get_task("switch_traffic").upstream_task_ids
    resumed = dag.get_task("pgbouncer_resumed")
    assert resumed.is_teardown and "switch_traffic" in resumed.upstream_task_ids


@pytest.mark.parametrize("name", ROLLBACKS)
def test_the_dag_file_declares_and_builds_nothing(name):
    text = (DAGS / name).read_text()
    for smell in ("STEP_IDS", "dsn", "password", "time.time()", "xcom_push", "def _"):
        assert smell not in text
