"""``bisman_rollout`` end to end against the sandbox: triggered through the REST API with a conf the
way the form submits it, the plan approval answered through the REST API as in the UI.

The approved rehearsal (the ``rehearsal`` fixture, one run for the session) must pass every built
phase and stop at the first placeholder; each failure path below gets a run of its own. Every wait
is on a condition (a task's state, a datapoint), never a fixed sleep.
"""

from __future__ import annotations

import json
import shutil
import uuid
from urllib.parse import quote

import pytest

from bisman_ops import change_lock
from bisman_ops.naming import ResourceNames
from bisman_ops.rollout import rollback_offer as offer
from bisman_ops.rollout.chaos import DRILLS
from bisman_ops.rollout.read_replica import cloudwatch_replica_lag
from bisman_sandbox import aws as sandbox_aws
from bisman_sandbox import context as sandbox_context
from bisman_sandbox import replica_lag_publisher, sinks
from bisman_sandbox.process import SandboxError, wait_until
from bisman_sandbox.rollout_conf import rollout_conf
from tests.e2e import restores
from tests.e2e.approvals import answer
from tests.e2e.rollout_runs import (
    APPROVE,
    DAG_ID,
    NAMES,
    PHASES,
    approve,
    failure_of,
    finished,
    form,
    lock_holder,
    plan_objects,
    report,
    run_count,
    states,
    steps,
    summary,
)

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def af(rollout):
    return rollout


def test_the_approved_rehearsal_passes_every_phase_from_preflight_to_post_deploy(rehearsal, sandbox):
    assert rehearsal.approval["subject"].startswith("Apply the Terraform plan to staging?")
    assert "Plan SHA-256" in rehearsal.approval["body"]
    assert rehearsal.state == "success"
    st = rehearsal.states
    for task_id, state in st.items():
        assert state in ("success", "skipped"), f"{task_id} is {state}"
    for group in PHASES:
        assert st[f"{group}.{group}_gate"] == "success", group
    for task in ("core_infrastructure.terraform_apply", "read_replica.replica_restored",
                 "read_replica.reads_fall_back_to_primary"):
        assert st[task] == "success", task
    # Real Terraform applied it: staging's state in moto's S3 under the environment's key.
    tf_state = json.loads(_backend_state(sandbox))
    assert tf_state["terraform_version"].startswith("1.15."), tf_state["terraform_version"]
    db_primary = next(r for r in tf_state["resources"]
                      if (r["type"], r["name"]) == ("terraform_data", "db_primary"))
    assert db_primary["instances"][0]["attributes"]["input"]["value"]["identifier"] == \
        NAMES.db_instance_identifier
    # Phase 6: the canary and the error-ratio drill's alert reached both channels; what the checks
    # added (the application's fault, the probe tenant) is gone again.
    for task in ("monitoring.canary_alert_delivered", "monitoring.error_alert_delivered",
                 "monitoring.app_errors_stopped", "monitoring.probe_tenant_removed"):
        assert st[task] == "success", task
    for alert in ("Watchdog", "BismanHighErrorRatio"):
        assert any(alert in f"{m['subject']}\n{m.get('text', '')}" for m in rehearsal.mail), alert
        assert any(alert in json.dumps(p) for p in rehearsal.slack), alert
    # Phase 7: staging runs every drill without asking; each is restored and found steady after.
    assert st["chaos.approve_drills"] == "skipped"
    for drill in DRILLS:
        for task in ("fault_injected", "fault_coped_with", "fault_restored", "steady_state_after"):
            assert st[f"chaos.{drill}.{task}"] == "success", (drill, task)
    # Phase 9: health through the load balancer, TLS, the security checks and the baseline.
    for task in ("healthy_through_load_balancer", "tls_graded", "waf_active", "security_groups_closed",
                 "database_not_public", "secrets_not_leaked", "performance_baseline"):
        assert st[f"post_deploy.{task}"] == "success", task
    assert st["release_change_lock"] == "success"
    assert rehearsal.lock is None


def test_every_damaging_step_killed_after_its_damage_was_restored_and_the_clear_resumed_the_run(rehearsal):
    """issue 23 point 1: each damaging step's process SIGKILLed right after its damage (before it
    could report) failed; its restore ran anyway and the environment was back (the replica
    streaming, the application answering 200 with every worker, Redis on the master it had, no test,
    smoke or probe tenant left); cleared with its downstream tasks, it ran again and the run ended
    green."""
    assert [s["killed"] for s in rehearsal.survived] == restores.rollout_kills()
    for seen in rehearsal.survived:
        assert (seen["try"], seen["state"], seen["restored"]) == (1, "failed", "success"), seen
        back = {k: v for k, v in seen.items() if k in restores.BACK}
        assert back and back == {k: restores.BACK[k] for k in back}, seen
        # The failure stopped its phase and every later one (issue 23 point 14: shown on a run).
        assert set(seen["gates"].values()) == {"upstream_failed"}, seen
        assert restores.phase_of(seen["killed"]) in seen["gates"] and "post_deploy" in seen["gates"]
    for task in restores.rollout_kills():
        assert rehearsal.states[task] == "success", task  # its second try, after the clear
    assert rehearsal.state == "success" and rehearsal.lock is None


def test_the_rehearsal_report_records_the_approval_outputs_and_measurements_without_secrets(rehearsal):
    rep, markdown = rehearsal.report, rehearsal.markdown
    assert rep["outcome"] == "success"
    assert summary(rep)["phase reached"] == "post_deploy" and "stopped at" not in summary(rep)
    approval_row = next(s for s in rep["sections"] if s["title"] == "Approvals")["tables"][0]["rows"][0]
    assert approval_row[0] == APPROVE and approval_row[2] == "Approve" and approval_row[3] == "admin"
    outputs = next(s for s in rep["sections"] if s["title"] == "Terraform outputs")["tables"][0]["rows"]
    assert ["db_replica_identifier", "bisman-erp-staging-replica"] in outputs
    measured = steps(rep)
    pooled = measured["core_infrastructure.connections_pooled"]
    assert pooled["peak_server_connections"] <= pooled["pool_size"]
    assert pooled["peak_client_connections"] > pooled["peak_server_connections"]
    assert measured["read_replica.replica_lag_below_threshold"]["sql_replay_lag_s"] < 1.0
    assert measured["read_replica.reads_fall_back_to_primary"]["read_route"] == "fallback"
    panels = measured["monitoring.panels_show_live_data"]
    assert panels["without_data"] == [] and panels["rendering"] == "not checked"
    journal = {j["drill"]: j for j in measured["chaos.chaos_gate"]["journal"]}
    assert sorted(journal) == sorted(DRILLS)
    for drill, j in journal.items():
        assert j["during"]["outcome"] == "coped" and not j["stop_condition_fired"], drill
        # Coped with within the recovery timeout (the form's default, 180 s).
        assert 0 <= j["recovery_s"] < 180 and j["hypothesis_after"]["error_ratio"] == 0.0, drill
    # Left as found: the Redis master failed back, the workers back to their count.
    redis_drill = journal["redis_failover"]
    assert redis_drill["restore"]["primary"] == redis_drill["hypothesis_before"]["found"]["primary"]
    assert journal["app_task_killed"]["restore"]["running"] == \
        journal["app_task_killed"]["hypothesis_before"]["found"]["workers"]
    # Post-deploy measured what it judged: where the data services listen, which keys it compared.
    exposure = measured["post_deploy.database_not_public"]
    assert {i["publicly_accessible"] for i in exposure["instances"].values()} == {False}
    assert exposure["listen_addresses"]["postgres_primary"] == ["127.0.0.1"]
    tls = measured["post_deploy.tls_graded"]
    assert tls["grade"] == "A+" and tls["caps"] == [] and tls["chain_trusted"] and tls["leaf_days"] <= 90
    scan = measured["post_deploy.secrets_not_leaked"]
    assert scan["log_events_scanned"] > 0 and "JWT_SECRET" in scan["keys_compared"] and scan["leaks"] == []
    assert "sandbox-jwt-secret" not in markdown and "sk_test_sandbox" not in markdown
    # The database password Terraform got (a sensitive variable in the plan) is shown nowhere.
    for shown in (json.dumps(rehearsal.approval), json.dumps(rep), markdown):
        assert sandbox_context.DB_PASSWORD not in shown
    baseline = measured["post_deploy.performance_baseline"]
    assert len(baseline["runs"]) >= 5 and baseline["errors"] == 0 and baseline["stored"].startswith("s3://")


def test_the_run_report_page_shows_the_rehearsal_to_an_operator_with_a_token(af, rehearsal):
    import requests

    url = f"{af.url}/bisman-reports/dags/{DAG_ID}/runs/{quote(rehearsal.run_id, safe='')}"
    assert requests.get(url, timeout=30).status_code in (401, 403)  # no token, no report
    page = af.session.get(url, timeout=30)  # the operator's bearer token
    assert page.status_code == 200, page.text[:300]
    text = page.text
    assert "BISMAN ERP rollout to staging" in text and 'class="outcome success"' in text
    for phase in PHASES:
        assert f"<h2>{phase} <span" in text, phase
    assert f"/runs/{quote(rehearsal.run_id)}/tasks/core_infrastructure.terraform_apply" in text
    assert "Approve" in text and "admin" in text  # who approved
    assert sandbox_context.DB_PASSWORD not in text and "sandbox-jwt-secret" not in text
    missing = af.session.get(f"{af.url}/bisman-reports/dags/{DAG_ID}/runs/no-such-run", timeout=30)
    assert missing.status_code == 404
    views = [v for p in af._call("GET", "/plugins")["plugins"] for v in p.get("external_views", [])]
    assert {"name": "Run report", "destination": "dag_run"}.items() <= next(
        v for v in views if v["name"] == "Run report").items()


def test_a_second_rollout_waits_untouched_while_one_is_applied(rehearsal):
    # max_active_runs=1: queued, no task of it scheduled to run, while the first was being applied.
    assert rehearsal.second_state == "queued"
    assert all(state in (None, "scheduled") for state in rehearsal.second_states.values())


def test_the_same_form_with_the_drills_off_plans_no_changes_and_skips_approval_apply_and_drills(
        af, rehearsal, sandbox):
    # The drills were shown by the rehearsal; switched off they are skipped and their phases still pass.
    drills_off = {"replica_failure_drill": False, "alert_threshold_drill": False, "chaos_drills": False}
    again = af.trigger(DAG_ID, {**rehearsal.conf, **drills_off})
    assert finished(af, again) == "success"
    st = states(af, again)
    assert st[APPROVE] == "skipped" and st["core_infrastructure.terraform_apply"] == "skipped"
    assert st["core_infrastructure.terraform_outputs_checked"] == "success"
    for drill in ("read_replica.replica_taken_down", "read_replica.replica_restored",
                  "monitoring.app_errors_started", "monitoring.app_errors_stopped"):
        assert st[drill] == "skipped", drill
    assert st["read_replica.read_replica_gate"] == "success"
    assert st["monitoring.monitoring_gate"] == "success"
    for drill in DRILLS:
        assert st[f"chaos.{drill}.fault_injected"] == "skipped", drill
    assert st["chaos.chaos_gate"] == "success"
    # The same build measured again: no false alarm against the rehearsal's baseline.
    perf = steps(report(sandbox, again)[0])["post_deploy.performance_baseline"]
    assert perf["regressed"] is False and perf["baseline_build"] == rehearsal.conf["app_image"], perf


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
    """Staging's Terraform state in moto's S3 (the key every run of staging uses), as stored. A
    missing state fails the test: two reads of nothing must not pass for an unchanged state."""
    n = sandbox_aws.names()
    s3 = sandbox_aws.client(sandbox, "s3")
    key = f"{n.project_name}/{n.environment}/terraform.tfstate"
    try:
        return s3.get_object(Bucket=n.state_bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        pytest.fail(f"no Terraform state at s3://{n.state_bucket}/{key}: staging was never applied "
                    "(the rehearsal applies it first)")


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
    # A failed apply may have applied part of the plan: the rollbacks are offered (answered Stop),
    # then the run's one notice says where it stopped.
    offered = sinks.wait_for_mail(sandbox, lambda m: "roll back?" in m["subject"])
    assert "failed at core_infrastructure.terraform_apply" in offered["subject"]
    mail = sinks.wait_for_mail(sandbox, lambda m: "FAILED" in m["subject"])
    assert "core_infrastructure.terraform_apply" in mail["subject"]


def test_lag_that_never_drops_times_out_and_the_application_rollback_offered_is_run(
        af, sandbox, monkeypatch, service_on_revision_2):
    replica_id = NAMES.db_replica_identifier
    replica_lag_publisher.stop(sandbox)
    monkeypatch.setenv(replica_lag_publisher.OVERRIDE_ENV, "5.0")
    replica_lag_publisher.start(sandbox, replica_id=replica_id)
    af.unpause(offer.APPLICATION_DAG)  # a paused rollback DAG fails the trigger, naming it
    try:
        cloudwatch = sandbox_aws.client(sandbox, "cloudwatch")
        wait_until(lambda: (cloudwatch_replica_lag(cloudwatch, replica_id)["value"] or 0) >= 5.0,
                   timeout=120, what="the overridden replica lag in CloudWatch", interval=1)
        conf = form(sandbox, replica_lag_timeout_seconds=30, replica_failure_drill=False)
        run_id = af.trigger(DAG_ID, conf)
        approve(af, run_id)
        # Failed after the apply: the operator is offered the rollbacks and chooses the application's.
        offered = answer(af, DAG_ID, run_id, "choose_rollback", offer.APPLICATION)
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

    failed_at = "read_replica.replica_lag_below_threshold"
    assert offered["subject"] == f"The rollout to staging failed at {failed_at}: roll back?"
    assert (st["choose_rollback"], st["application_rollback_triggered"]) == ("success", "success")
    assert st["infrastructure_rollback_triggered"] == "skipped" and st["rollback_declined"] == "skipped"
    choice = next(s for s in rep["sections"] if s["title"] == "Approvals")["tables"][0]["rows"][-1]
    assert choice[0] == "choose_rollback" and choice[2] == offer.APPLICATION and choice[3] == "admin"
    # The rollback run it created, with the form filled from this run; it runs its own checks.
    rollback_run = af._call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/application_rollback_"
                                   "triggered/xcomEntries/trigger_run_id?deserialize=true")["value"]
    assert af.run(offer.APPLICATION_DAG, rollback_run)["conf"] == {
        "environment": "staging", "task_definition": "previous", "confirm": NAMES.ecs_service_name,
        "reason": f"bisman_rollout run {run_id} failed at {failed_at}"}
    assert af.wait_for_run(offer.APPLICATION_DAG, rollback_run, timeout=600) == "success"
    ecs = sandbox_aws.client(sandbox, "ecs")
    service = ecs.describe_services(cluster=NAMES.ecs_cluster_name, services=[NAMES.ecs_service_name])
    assert service["services"][0]["taskDefinition"].endswith(f"{NAMES.app_task_family}:1")
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
