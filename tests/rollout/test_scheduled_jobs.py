"""Phase 5's logic without a scheduler: what the API shows of the recurring DAGs judged against the
contract, pausing refused or undone, a failed smoke run named, and the effects judged."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import scheduled_jobs as jobs

CONTRACT = {
    "bisman_daily_usage_aggregation": "0 2 * * *",
    "bisman_trial_expiry": "0 * * * *",
    "bisman_quota_alerts": "30 * * * *",
    "bisman_weekly_audit": "0 0 * * 0",
}


def api_dag(dag_id: str, schedule: str, paused: bool = False) -> dict:
    return {"dag_id": dag_id, "timetable_summary": schedule, "is_paused": paused, "has_import_errors": False,
            "fileloc": f"/opt/airflow/dags/{dag_id}.py"}


def all_deployed(**changes) -> dict:
    dags = {d: api_dag(d, s) for d, s in CONTRACT.items()}
    dags.update(changes)
    return dags


class FakeApi:
    """The two calls ensure_unpaused makes, over a dict of DAGs; ``sticky`` DAGs stay paused."""

    def __init__(self, dags: dict, sticky: tuple[str, ...] = ()):
        self.dags, self.sticky, self.patched = dags, sticky, []

    def set_paused(self, dag_id: str, paused: bool) -> dict:
        self.patched.append((dag_id, paused))
        if dag_id not in self.sticky:
            self.dags[dag_id]["is_paused"] = paused
        return self.dags[dag_id]

    def dag(self, dag_id: str) -> dict | None:
        return self.dags.get(dag_id)


def test_expected_schedules_are_the_contracts_unless_the_environment_overrides_one():
    assert jobs.expected_schedules({}) == CONTRACT
    assert jobs.expected_schedules({"QUOTA_ALERT_CRON": "15 * * * *"})["bisman_quota_alerts"] == "15 * * * *"


def test_deployment_as_contracted_has_no_problems():
    measured, problems = jobs.deployment_state(all_deployed(), [], CONTRACT)
    assert problems == []
    assert measured["bisman_weekly_audit"]["schedule"] == "0 0 * * 0"


def test_missing_dag_import_error_and_wrong_schedule_are_each_named():
    dags = all_deployed(bisman_trial_expiry=None,
                        bisman_quota_alerts=api_dag("bisman_quota_alerts", "0 3 * * *"))
    errors = [{"filename": "/opt/airflow/dags/bisman_weekly_audit.py",
               "stack_trace": "Traceback...\nValueError: WEEKLY_AUDIT_CRON='x' is not a 5-field cron "
                              "expression"}]
    dags["bisman_weekly_audit"] = None  # a file that fails to import has no DAG
    _, problems = jobs.deployment_state(dags, errors, CONTRACT)
    text = "; ".join(problems)
    assert "bisman_trial_expiry: not deployed" in text
    assert "bisman_quota_alerts: schedule '0 3 * * *', expected '30 * * * *'" in text
    assert "bisman_weekly_audit: import error ValueError: WEEKLY_AUDIT_CRON='x'" in text
    assert "bisman_daily_usage_aggregation" not in text


def test_an_overridden_schedule_deployed_passes_only_against_the_override():
    dags = all_deployed(bisman_quota_alerts=api_dag("bisman_quota_alerts", "15 * * * *"))
    overridden = jobs.expected_schedules({"QUOTA_ALERT_CRON": "15 * * * *"})
    assert jobs.deployment_state(dags, [], overridden)[1] == []
    assert jobs.deployment_state(dags, [], CONTRACT)[1]


def test_paused_dag_without_permission_fails_naming_it_and_unpauses_nothing():
    dags = all_deployed(bisman_trial_expiry=api_dag("bisman_trial_expiry", "0 * * * *", paused=True))
    deployed, _ = jobs.deployment_state(dags, [], CONTRACT)
    api = FakeApi(dags)
    with pytest.raises(CheckFailed) as failed:
        jobs.ensure_unpaused(api, deployed, allowed=False)
    assert failed.value.seen == "paused: bisman_trial_expiry"
    assert "unpause_recurring_dags" in failed.value.next_step
    assert api.patched == []


def test_paused_dag_with_permission_is_unpaused_and_confirmed():
    dags = all_deployed(bisman_weekly_audit=api_dag("bisman_weekly_audit", "0 0 * * 0", paused=True))
    deployed, _ = jobs.deployment_state(dags, [], CONTRACT)
    api = FakeApi(dags)
    done = jobs.ensure_unpaused(api, deployed, allowed=True)
    assert api.patched == [("bisman_weekly_audit", False)]
    assert done["unpaused"] == ["bisman_weekly_audit"]


def test_unpause_that_does_not_take_fails_naming_the_dag():
    dags = all_deployed(bisman_weekly_audit=api_dag("bisman_weekly_audit", "0 0 * * 0", paused=True))
    deployed, _ = jobs.deployment_state(dags, [], CONTRACT)
    with pytest.raises(CheckFailed, match="bisman_weekly_audit still paused"):
        jobs.ensure_unpaused(FakeApi(dags, sticky=("bisman_weekly_audit",)), deployed, allowed=True)


class RunsApi:
    def __init__(self, state: str | None, tasks: dict[str, str]):
        self.state, self.tasks = state, tasks

    def dag_run(self, dag_id: str, run_id: str) -> dict | None:
        return None if self.state is None else {"state": self.state, "start_date": "2026-12-01T21:00:00Z"}

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return [{"task_id": t, "state": s} for t, s in self.tasks.items()]


def test_failed_smoke_run_is_named_with_the_tasks_that_did_not_succeed():
    api = RunsApi("failed", {"send_tenant_alerts": "failed", "send_team_summary": "success",
                             "watcher": "failed"})
    with pytest.raises(CheckFailed) as failed:
        jobs.smoke_run_outcome(api, "bisman_quota_alerts", "rollout_smoke__manual__1")
    assert failed.value.checked == "smoke run rollout_smoke__manual__1 of bisman_quota_alerts"
    assert failed.value.seen == ("ended failed (tasks not successful: send_tenant_alerts=failed, "
                                 "watcher=failed)")


def test_successful_smoke_run_is_measured():
    api = RunsApi("success", {"run_weekly_audit": "success"})
    measured = jobs.smoke_run_outcome(api, "bisman_weekly_audit", "r")
    assert measured["state"] == "success" and measured["tasks"] == {"run_weekly_audit": "success"}


def test_smoke_run_that_is_missing_is_named():
    with pytest.raises(CheckFailed, match="no such run"):
        jobs.smoke_run_outcome(RunsApi(None, {}), "bisman_trial_expiry", "r")


def test_smoke_run_id_is_the_rollout_runs_own():
    run_id = "manual__2026-12-01T21:00:00+00:00"
    assert jobs.smoke_run_id(run_id) == f"rollout_smoke__{run_id}"
    assert jobs.SMOKE_RUN_ID == jobs.SMOKE_RUN_PREFIX + "{{ run_id }}"


class FakeS3:
    def __init__(self, objects: dict[str, datetime]):
        self.objects = objects

    def head_object(self, Bucket: str, Key: str) -> dict:
        if Key not in self.objects:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        return {"LastModified": self.objects[Key], "ContentLength": 10}


AUDIT_RESULT = {"week": "2026-W48", "report_uris": {
    "report.json": "s3://b/reports/audit/2026-W48/report.json",
    "report.md": "s3://b/reports/audit/2026-W48/report.md"}}


def test_audit_report_written_by_the_run_passes_and_an_old_or_missing_one_is_named():
    since = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    fresh = datetime(2026, 12, 1, 21, 1, tzinfo=UTC)
    ok = jobs.audit_effect(FakeS3({"reports/audit/2026-W48/report.json": fresh,
                                   "reports/audit/2026-W48/report.md": fresh}), AUDIT_RESULT, since)
    assert set(ok["reports"]) == {"report.json", "report.md"}
    with pytest.raises(CheckFailed) as failed:
        jobs.audit_effect(FakeS3({"reports/audit/2026-W48/report.json": datetime(2026, 11, 23, tzinfo=UTC)}),
                          AUDIT_RESULT, since)
    assert "report.json last written 2026-11-23" in failed.value.seen
    assert "report.md: 404" in failed.value.seen
