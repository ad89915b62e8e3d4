"""Phase 5 (``scheduled_jobs``) end to end on a real Airflow: the phase's tasks (the same functions as
``bisman_rollout``'s group, in ``scheduled_jobs_dags/``) next to copies of the four recurring DAG
files, read through the REST API with the ``airflow_api`` connection the local Airflow provides.

A paused recurring DAG without permission to unpause fails the phase naming it, with nothing
after it run; allowed to unpause, the four smoke runs pass, their effects are verified, the quota
alert's mail arrives in the SMTP sink, and the test tenants are gone afterwards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from bisman_ops.rollout import scheduled_jobs as jobs
from bisman_sandbox import launcher, postgres, sinks
from bisman_sandbox.airflow_local import AirflowLocal

pytestmark = pytest.mark.timeout(2400)

PHASE = "bisman_rollout_scheduled_jobs"
HERE = Path(__file__).parent
DAGS = Path(__file__).resolve().parents[2] / "dags"
RUN_TIMEOUT = 1500


@pytest.fixture(scope="module")
def af(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("scheduled_jobs_dags")
    for dag_id in jobs.RECURRING_DAGS:
        shutil.copy(DAGS / f"{dag_id}.py", folder)
    shutil.copy(HERE / "scheduled_jobs_dags" / f"{PHASE}.py", folder)
    base = AirflowLocal.from_env()
    local = replace(base, home=base.home.with_name(base.home.name + "-phase5"), port=base.port + 20)
    env = {**launcher.airflow_connection_env(sandbox), "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"}
    local.down()
    try:
        local.up(extra_env=env)
        client = local.client()
        for dag_id in (PHASE, *jobs.RECURRING_DAGS):
            client.wait_for_dag(dag_id, timeout=300)
        client.unpause(PHASE)
        yield client
    finally:
        local.down()


def states(af, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in af.task_instances(PHASE, run_id)}


def failure(af, run_id: str, task_id: str) -> dict:
    entry = af._call("GET", f"/dags/{PHASE}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                            "change_record?deserialize=true")
    value = entry["value"]
    return (json.loads(value) if isinstance(value, str) else value)["failure"]


def smoke_tenants(sandbox) -> list[tuple]:
    with psycopg.connect(postgres.dsn(sandbox), autocommit=True) as conn:
        return conn.execute("SELECT id, slug FROM tenants WHERE slug LIKE %s",
                            (jobs.SMOKE_SLUG_PREFIX + "%",)).fetchall()


def test_paused_recurring_dag_without_permission_fails_the_phase_naming_it(af, sandbox):
    for dag_id in jobs.RECURRING_DAGS:
        af._call("PATCH", f"/dags/{dag_id}", json={"is_paused": dag_id == jobs.TRIAL_EXPIRY})
    run_id = af.trigger(PHASE, {"unpause_recurring_dags": False})
    assert af.wait_for_run(PHASE, run_id, timeout=RUN_TIMEOUT) == "failed"
    st = states(af, run_id)
    assert st["scheduled_jobs.recurring_dags_deployed"] == "success"
    assert st["scheduled_jobs.recurring_dags_unpaused"] == "failed"
    refused = failure(af, run_id, "scheduled_jobs.recurring_dags_unpaused")
    assert refused["seen"] == "paused: bisman_trial_expiry"
    for task_id in ("scheduled_jobs.smoke_tenants_created",
                    "scheduled_jobs.daily_usage_aggregation_smoke_run",
                    "scheduled_jobs.scheduled_jobs_gate", "after_the_phase"):
        assert st[task_id] == "upstream_failed", task_id
    assert af._call("GET", f"/dags/{jobs.TRIAL_EXPIRY}")["is_paused"] is True  # nothing unpaused
    assert af._call("GET", f"/dags/{jobs.TRIAL_EXPIRY}/dagRuns?limit=1")["total_entries"] == 0


def test_phase_unpauses_smoke_runs_each_job_and_verifies_its_effect(af, sandbox):
    sinks.clear(sandbox)
    run_id = af.trigger(PHASE, {"unpause_recurring_dags": True})
    assert af.wait_for_run(PHASE, run_id, timeout=RUN_TIMEOUT) == "success", states(af, run_id)
    st = states(af, run_id)
    for task_id in ("scheduled_jobs.usage_aggregated_for_a_day", "scheduled_jobs.weekly_audit_report_written",
                    "scheduled_jobs.quota_alert_sent_once", "scheduled_jobs.trial_downgraded",
                    "scheduled_jobs.smoke_tenants_removed", "scheduled_jobs.scheduled_jobs_gate",
                    "after_the_phase"):
        assert st[task_id] == "success", task_id
    for dag_id in jobs.RECURRING_DAGS:
        assert af._call("GET", f"/dags/{dag_id}")["is_paused"] is False
        smoke = af.run(dag_id, jobs.smoke_run_id(run_id))
        assert smoke["state"] == "success", dag_id

    quota = af._call("GET", f"/dags/{PHASE}/dagRuns/{run_id}/taskInstances/"
                            "scheduled_jobs.quota_alert_sent_once/xcomEntries/return_value?deserialize=true")["value"]
    assert quota["alerts"] == 1
    slug = f"{jobs.SMOKE_SLUG_PREFIX}"
    to_tenant = [m for m in sinks.captured_mail(sandbox)
                 if slug in json.dumps(m.get("to")) and "over-quota" in json.dumps(m.get("to"))]
    assert len(to_tenant) == 1, to_tenant  # the alert's mail arrived, once
    assert smoke_tenants(sandbox) == []  # the teardown removed them
