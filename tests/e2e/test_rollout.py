"""``bisman_rollout`` end to end against the sandbox: triggered through the REST API with a conf the
way the form submits it, the plan approval answered through the REST API as in the UI.

Phases after read_replica are still being built (an unbuilt one fails on purpose), so a good run
ends failed in a later phase; these tests assert the three groups built here and that the run
stopped after them. Every wait is on a condition (a task's state, a datapoint), never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest

from bisman_ops import change_lock
from bisman_ops.naming import ResourceNames
from bisman_ops.rollout.read_replica import cloudwatch_replica_lag
from bisman_sandbox import aws as sandbox_aws
from bisman_sandbox import replica_lag_publisher, sinks
from bisman_sandbox.process import SandboxError, wait_until
from bisman_sandbox.rollout_conf import rollout_conf

pytestmark = pytest.mark.timeout(1800)

DAG_ID = "bisman_rollout"
APPROVE = "core_infrastructure.approve_plan"
BUILT_GROUPS = ("preflight", "core_infrastructure", "read_replica")
LATER_PHASES = ("usage_metering", "billing", "scheduled_jobs", "monitoring", "chaos", "post_deploy")
NAMES = ResourceNames("bisman-erp", "staging")
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def af(airflow):
    airflow.wait_for_dag(DAG_ID, timeout=900)  # all DAG files parsed first, on a busy machine
    assert airflow.import_errors() == []
    airflow.unpause(DAG_ID)
    return airflow


def form(sandbox, **overrides) -> dict:
    """The form as an operator fills it, with a fresh image tag so the plan always has changes."""
    conf = rollout_conf(sandbox)
    conf["app_image"] = f"bisman-erp:e2e-{uuid.uuid4().hex[:8]}"
    conf.update(overrides)
    return conf


def states(af, run_id: str) -> dict[str, str]:
    return {t["task_id"]: t["state"] for t in af.task_instances(DAG_ID, run_id)}


def finished(af, run_id: str) -> str:
    state = af.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    # The teardowns (lock release, report) may still be finishing when the run's state is set.
    af.wait_for_task_state(DAG_ID, run_id, "write_run_report", ("success", "failed", "skipped"), timeout=120)
    return state


def task_instance(af, run_id: str, task_id: str) -> dict:
    return af._call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")


def approve(af, run_id: str, option: str = "Approve") -> dict:
    """Answer the plan approval as in the UI; returns what it asked.

    Airflow 3.3.2 races an answer given before the scheduler has seen the pausing worker exit: the
    late executor event kills the resumed try. So the answer is given once the scheduler logged
    that event, and counts once the approval has finished; asked again, it is answered again."""
    details = None
    for _ in range(3):
        af.wait_for_task_state(DAG_ID, run_id, APPROVE, ("awaiting_input",), timeout=600)
        asked = task_instance(af, run_id, APPROVE)["try_number"]
        details = details or af.hitl_details(DAG_ID, run_id, APPROVE)
        wait_until(lambda asked=asked: pause_seen_by_scheduler(run_id, asked), timeout=300,
                   what=f"the scheduler to see {APPROVE} pause", interval=1)
        af.answer_approval(DAG_ID, run_id, APPROVE, option)

        def settled(asked: int = asked) -> bool:
            ti = task_instance(af, run_id, APPROVE)
            return ti["state"] in ("success", "failed") or (
                ti["state"] == "awaiting_input" and ti["try_number"] > asked)

        wait_until(settled, timeout=300, what=f"{APPROVE} to take the answer {option}", interval=1)
        if task_instance(af, run_id, APPROVE)["state"] in ("success", "failed"):
            return details
    raise AssertionError(f"{APPROVE} asked three times")


def pause_seen_by_scheduler(run_id: str, try_number: int) -> bool:
    """The scheduler has processed the executor's event of the worker that paused for the answer
    (answering before that loses the answer: the Airflow race described in ``approve``)."""
    log = Path(os.environ["AIRFLOW_HOME"]) / "processes" / "logs" / "scheduler.log"
    event = (f"Received executor event with state success for task instance TaskInstanceKey("
             f"dag_id='{DAG_ID}', task_id='{APPROVE}', run_id='{run_id}', try_number={try_number},")
    return log.exists() and event in log.read_text(errors="replace")


def run_count(af) -> int:
    return af._call("GET", f"/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"]


def report(sandbox, run_id: str, names: ResourceNames = NAMES) -> tuple[dict, str]:
    s3 = sandbox_aws.client(sandbox, "s3")
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
    base = f"{names.reports_prefix}/{DAG_ID}/{safe}"
    body = s3.get_object(Bucket=names.state_bucket, Key=f"{base}.json")["Body"].read().decode()
    markdown = s3.get_object(Bucket=names.state_bucket, Key=f"{base}.md")["Body"].read().decode()
    return json.loads(body), markdown


def lock_holder(sandbox):
    return change_lock.current(sandbox_aws.client(sandbox, "dynamodb"), NAMES.lock_table, "staging")


def summary(rep: dict) -> dict:
    return next(s for s in rep["sections"] if s["title"] == "Summary")["values"]


def plan_objects(sandbox, run_id: str) -> list[str]:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
    listed = sandbox_aws.client(sandbox, "s3").list_objects_v2(Bucket=NAMES.state_bucket,
                                                               Prefix=f"plans/staging/{safe}/")
    return [o["Key"] for o in listed.get("Contents", [])]


def test_three_phases_pass_with_approval_and_the_run_stops_at_the_first_unbuilt_phase(af, sandbox):
    sinks.clear(sandbox)
    run_id = af.trigger(DAG_ID, form(sandbox))
    details = approve(af, run_id)
    assert details["subject"].startswith("Apply the Terraform plan to staging?")
    assert "Plan SHA-256" in details["body"]

    # A second rollout triggered meanwhile waits (one run at a time) and has touched nothing, while
    # the scheduler takes the first through its apply.
    second = af.trigger(DAG_ID, form(sandbox))
    af.wait_for_task_state(DAG_ID, run_id, "core_infrastructure.terraform_apply", ("success",), timeout=600)
    assert af.run(DAG_ID, second)["state"] == "queued"
    assert all(state in (None, "scheduled") for state in states(af, second).values())
    af._call("PATCH", f"/dags/{DAG_ID}/dagRuns/{second}", json={"state": "failed"})

    assert finished(af, run_id) == "failed"
    st = states(af, run_id)
    for task_id, state in st.items():
        if task_id.split(".")[0] in BUILT_GROUPS:
            assert state in ("success", "skipped"), f"{task_id} is {state}"
    for gate in ("preflight.preflight_gate", "core_infrastructure.core_infrastructure_gate",
                 "read_replica.read_replica_gate", "core_infrastructure.terraform_apply",
                 "read_replica.replica_restored", "read_replica.reads_fall_back_to_primary"):
        assert st[gate] == "success", gate
    stopped = [t for t, state in st.items() if state == "failed"]
    assert stopped and all(t.split(".")[0] in LATER_PHASES for t in stopped), stopped
    assert st["post_deploy.post_deploy_gate"] == "upstream_failed"
    assert st["release_change_lock"] == "success"
    assert lock_holder(sandbox) is None

    rep, markdown = report(sandbox, run_id)
    assert rep["outcome"] == "failed"
    assert summary(rep)["phase reached"] in BUILT_GROUPS[2:] + LATER_PHASES
    assert summary(rep)["stopped at"] in stopped
    approval_row = next(s for s in rep["sections"] if s["title"] == "Approvals")["tables"][0]["rows"][0]
    assert approval_row[0] == APPROVE and approval_row[2] == "Approve" and approval_row[3] == "admin"
    outputs = next(s for s in rep["sections"] if s["title"] == "Terraform outputs")["tables"][0]["rows"]
    assert ["db_replica_identifier", "bisman-erp-staging-replica"] in outputs
    steps = {r[0]: r for r in next(s for s in rep["sections"]
                                   if s["title"] == "Checks and gate measurements")["tables"][0]["rows"]}
    pooled = steps["core_infrastructure.connections_pooled"][2]
    assert pooled["peak_server_connections"] <= pooled["pool_size"]
    assert pooled["peak_client_connections"] > pooled["peak_server_connections"]
    assert steps["read_replica.replica_lag_below_threshold"][2]["sql_replay_lag_s"] < 1.0
    assert steps["read_replica.reads_fall_back_to_primary"][2]["read_route"] == "fallback"
    assert "sandbox-jwt-secret" not in markdown and "sk_test_sandbox" not in markdown
    # Where it stopped, the team was told by email and Slack.
    where = summary(rep)["stopped at"]
    sinks.wait_for_mail(sandbox, lambda m: where in m["subject"])
    sinks.wait_for_slack(sandbox, lambda p: where in json.dumps(p))


def test_plan_without_changes_skips_approval_and_apply(af, sandbox):
    conf = form(sandbox)
    first = af.trigger(DAG_ID, conf)
    approve(af, first)
    finished(af, first)
    again = af.trigger(DAG_ID, conf)
    assert finished(af, again) == "failed"  # in a phase still being built, as every run for now
    st = states(af, again)
    assert st[APPROVE] == "skipped" and st["core_infrastructure.terraform_apply"] == "skipped"
    assert st["core_infrastructure.terraform_outputs_checked"] == "success"
    assert st["read_replica.read_replica_gate"] == "success"


def test_plan_replacing_the_database_is_flagged_first_and_rejecting_it_applies_nothing(af, sandbox, tmp_path):
    # A copy of the configuration whose change of master username forces a new database.
    workdir = sandbox.path("e2e", f"replace-db-{uuid.uuid4().hex[:6]}")
    shutil.copytree(rollout_conf(sandbox)["terraform_dir"], workdir,
                    ignore=shutil.ignore_patterns(".terraform"))
    main = workdir / "main.tf"
    main.write_text(main.read_text().replace('"bisman_app"', '"bisman_owner"'))  # input and trigger
    state_before = _backend_state(sandbox)

    run_id = af.trigger(DAG_ID, form(sandbox, terraform_dir=str(workdir)))
    details = approve(af, run_id, "Reject")
    assert details["body"].startswith("# ⚠ THIS PLAN DESTROYS OR REPLACES A DATABASE")
    assert details["body"].index("terraform_data.db_primary") < details["body"].index("**Plan:**")
    assert details["subject"].startswith("Apply the Terraform plan to staging? DATA AT RISK")

    # Rejected: the run is not a success, nothing after the approval ran, the lock is back.
    assert finished(af, run_id) == "failed"
    st = states(af, run_id)
    assert st[APPROVE] == "failed"
    assert st["core_infrastructure.terraform_apply"] == "upstream_failed"
    assert st["read_replica.replica_lag_below_threshold"] == "upstream_failed"
    assert st["release_change_lock"] == "success"
    assert _backend_state(sandbox) == state_before
    assert lock_holder(sandbox) is None
    rep, _ = report(sandbox, run_id)
    assert rep["outcome"] == "rejected"
    assert summary(rep)["stopped because"] == "Reject by admin"
    plan = next(s for s in rep["sections"] if s["title"] == "Terraform plan")["values"]
    assert "replace terraform_data.db_primary" in plan["stateful resources destroyed or replaced"]


def _backend_state(sandbox) -> str:
    """Staging's Terraform state in moto's S3 (the key every run of staging uses)."""
    n = sandbox_aws.names()
    s3 = sandbox_aws.client(sandbox, "s3")
    try:
        key = f"{n.project_name}/{n.environment}/terraform.tfstate"
        return s3.get_object(Bucket=n.state_bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        return ""


def test_bad_form_values_are_refused_before_a_run_exists(af, sandbox):
    runs_before = run_count(af)
    for field, value in (("environment", "production"), ("domain_name", "not a domain")):
        with pytest.raises(SandboxError, match="400"):
            af.trigger(DAG_ID, form(sandbox, **{field: value}))
    assert run_count(af) == runs_before


def test_prod_with_test_stripe_key_and_weak_jwt_fails_in_preflight_before_any_change(af, sandbox):
    sm = sandbox_aws.client(sandbox, "secretsmanager")
    prod = ResourceNames("bisman-erp", "prod")
    good = sm.get_secret_value(SecretId=prod.app_secret_name)["SecretString"]
    values = {**json.loads(good), "JWT_SECRET": "short-jwt",
              "STRIPE_SECRET_KEY": "sk_test_sandbox_not_secret"}
    sm.put_secret_value(SecretId=prod.app_secret_name, SecretString=json.dumps(values))
    try:
        run_id = af.trigger(DAG_ID, form(sandbox, environment="prod", domain_name="api.staging.bisman.test"))
        assert finished(af, run_id) == "failed"
    finally:
        sm.put_secret_value(SecretId=prod.app_secret_name, SecretString=good)
    st = states(af, run_id)
    assert st["preflight.app_secrets_valid"] == "failed"
    for untouched in ("preflight.state_backend_ready", "preflight.acquire_change_lock",
                      "core_infrastructure.terraform_init", "core_infrastructure.terraform_plan"):
        assert st[untouched] == "upstream_failed", untouched
    because = failure_of(af, run_id, "preflight.app_secrets_valid")["message"]
    assert "JWT_SECRET is 72 bits" in because
    assert "prod needs a sk_live_ key" in because
    assert "short-jwt" not in because
    ddb = sandbox_aws.client(sandbox, "dynamodb")
    assert change_lock.current(ddb, prod.lock_table, "prod") is None
    rep, markdown = report(sandbox, run_id, prod)
    assert rep["outcome"] == "refused" and "short-jwt" not in markdown


def failure_of(af, run_id: str, task_id: str) -> dict:
    """The failure a step recorded for the report."""
    entry = af._call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
                            "change_record?deserialize=true")
    value = entry["value"]
    return (json.loads(value) if isinstance(value, str) else value)["failure"]


def test_terraform_failing_mid_apply_releases_the_lock_and_the_report_says_where(af, sandbox):
    af._call("POST", "/variables", json={"key": "bisman_terraform_env",
                                         "value": json.dumps({"TF_VAR_sandbox_fail_apply": "true"})})
    try:
        sinks.clear(sandbox)
        run_id = af.trigger(DAG_ID, form(sandbox, db_instance_class="db.r6g.xlarge"))
        approve(af, run_id)
        assert finished(af, run_id) == "failed"
    finally:
        af._call("DELETE", "/variables/bisman_terraform_env")
    st = states(af, run_id)
    assert st["core_infrastructure.terraform_apply"] == "failed"
    assert st["core_infrastructure.terraform_outputs_checked"] == "upstream_failed"
    assert st["release_change_lock"] == "success"
    assert lock_holder(sandbox) is None
    rep, _ = report(sandbox, run_id)
    assert summary(rep)["phase reached"] == "preflight"
    assert summary(rep)["stopped at"] == "core_infrastructure.terraform_apply"
    assert "sandbox fault: apply failed on purpose" in summary(rep)["stopped because"]
    mail = sinks.wait_for_mail(sandbox, lambda m: "terraform_apply" in m["subject"])
    assert "FAILED" in mail["subject"]


def test_lag_that_never_drops_times_out_reporting_the_lag_seen(af, sandbox, monkeypatch):
    replica_id = NAMES.db_replica_identifier
    replica_lag_publisher.stop(sandbox)
    monkeypatch.setenv(replica_lag_publisher.OVERRIDE_ENV, "5.0")
    replica_lag_publisher.start(sandbox, replica_id=replica_id)
    try:
        cloudwatch = sandbox_aws.client(sandbox, "cloudwatch")
        wait_until(lambda: (cloudwatch_replica_lag(cloudwatch, replica_id)["value"] or 0) >= 5.0,
                   timeout=120, what="the overridden replica lag in CloudWatch", interval=1)
        conf = form(sandbox, replica_lag_timeout_seconds=30, replica_failure_drill=False)
        run_id = af.trigger(DAG_ID, conf)
        approve(af, run_id)
        assert finished(af, run_id) == "failed"
    finally:
        replica_lag_publisher.stop(sandbox)
        monkeypatch.delenv(replica_lag_publisher.OVERRIDE_ENV)
        replica_lag_publisher.start(sandbox, replica_id=replica_id)
    st = states(af, run_id)
    assert st["core_infrastructure.core_infrastructure_gate"] == "success"
    assert st["read_replica.replica_lag_below_threshold"] == "failed"
    assert st["read_replica.read_replica_gate"] == "upstream_failed"
    rep, _ = report(sandbox, run_id)
    because = summary(rep)["stopped because"]
    assert "timed out after 30 s" in because
    assert "CloudWatch ReplicaLag 5.00 s >= 1.0 s" in because
    assert lock_holder(sandbox) is None


def test_rollout_fails_on_the_change_lock_held_by_a_rollback_without_touching_anything(af, sandbox):
    ddb = sandbox_aws.client(sandbox, "dynamodb")
    holder = "bisman_rollback_database/manual__e2e"
    change_lock.acquire(ddb, NAMES.lock_table, "staging", holder, lease_seconds=900)
    try:
        run_id = af.trigger(DAG_ID, form(sandbox))
        assert finished(af, run_id) == "failed"
        st = states(af, run_id)
        assert st["preflight.acquire_change_lock"] == "failed"
        assert st["preflight.missing_secrets_generated"] == "upstream_failed"
        assert st["core_infrastructure.terraform_init"] == "upstream_failed"
        assert st["release_change_lock"] in ("skipped", "upstream_failed")  # never ours: not released
        assert lock_holder(sandbox).owner == holder
        assert plan_objects(sandbox, run_id) == []
        rep, _ = report(sandbox, run_id)
        assert holder in summary(rep)["stopped because"]
    finally:
        change_lock.release(ddb, NAMES.lock_table, "staging", holder)
