"""Infrastructure rollback logic with real git, real Terraform 1.15 and moto's S3/DynamoDB, through the
one Terraform session the rollout uses. Each test module has a project of its own in moto, so its
states are nobody else's."""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from bisman_ops.change import approval, lock
from bisman_ops.change import step as step_module
from bisman_ops.change.errors import CheckFailed
from bisman_ops.clients.terraform import TerraformSession
from bisman_ops.rollback import infrastructure as infra
from bisman_sandbox import aws
from tests.terraform import helpers
from tests.terraform.helpers import git

pytestmark = pytest.mark.timeout(300)
INFRA_DAG = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollback_infrastructure.py"


@pytest.fixture(scope="module")
def tctx():
    return helpers.sandbox()


@pytest.fixture(scope="module")
def project(tctx):
    return helpers.make_project(tctx)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return helpers.make_infra_repo(tmp_path_factory.mktemp("infra-repo") / "ops")


@pytest.fixture
def env(tctx, project, monkeypatch, tmp_path):
    for key, value in helpers.terraform_env(tctx).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BISMAN_PROJECT_NAME", project)
    monkeypatch.setenv("BISMAN_TERRAFORM_WORK_DIR", str(tmp_path / "work"))


def rollout(project: str, environment: str, source, run_id: str, **overrides) -> dict:
    """What the rollout does with the session: plan the directory with its settings, apply."""
    values = helpers.tfvars(project, environment, **overrides)
    s = TerraformSession(project_name=project, environment=environment, aws_region="us-east-1", run_id=run_id,
                         step="plan")
    s.prepare_from_directory(source)
    s.write_tfvars(values)
    planned = s.plan()
    s.cleanup()
    TerraformSession(project_name=project, environment=environment, aws_region="us-east-1", run_id=run_id,
                     step="apply").apply(planned, inputs=values)
    return values


def request(repo, **overrides):
    args = {"environment": "prod", "git_ref": None, "terraform_dir": str(repo["infra"]), "confirm": "prod"}
    return infra.plan_request(**(args | overrides))


def test_prod_rollback_after_a_staging_rollout_reads_and_writes_only_prods_state(tctx, project, repo, env):
    rollout(project, "prod", repo["infra"], "rollout__prod", app_image="bisman-erp:prod-41")
    rollout(project, "staging", repo["infra"], "rollout__staging", app_image="bisman-erp:staging-42")
    staging_before = helpers.state_of(tctx, project, "staging")
    prod_before = helpers.state_of(tctx, project, "prod")
    assert "db_reporting" in helpers.resource_inputs(prod_before)

    plan = request(repo)
    assert (plan.current_commit, plan.target_commit) == (repo["current"], repo["baseline"])
    planned = infra.checkout_and_plan(plan, "manual__rollback-prod")
    assert planned["state"] == f"s3://{project}-prod-terraform-state/{project}/prod/terraform.tfstate"
    assert planned["inputs"]["app_image"] == "bisman-erp:prod-41"  # prod's own, not staging's last run
    assert planned["summary"]["stateful_at_risk"] == [
        {"address": "terraform_data.db_reporting", "type": "aws_db_instance", "action": "delete",
         "reason": ""}
    ]
    assert planned["summary"]["resource_changes"][0]["address"] == "terraform_data.db_reporting"
    assert planned["markdown"].startswith("## ⚠ Stateful resources destroyed or replaced")
    assert helpers.state_of(tctx, project, "prod") == prod_before  # planning changes nothing

    result = infra.apply_approved(plan, planned, "manual__rollback-prod")
    prod_after = helpers.resource_inputs(helpers.state_of(tctx, project, "prod"))
    assert "db_reporting" not in prod_after
    assert prod_after["app_service"]["desired_count"] == 2
    assert "bisman-erp:prod-41" in prod_after["app_task_definition"]["container_definitions"]
    assert result["outputs"]["db_instance_identifier"] == f"{project}-prod-db"
    assert helpers.state_of(tctx, project, "staging") == staging_before


def test_the_apply_of_an_approved_plan_works_when_the_plan_tasks_directory_is_gone(
    tctx, project, repo, env, tmp_path
):
    rollout(project, "staging", repo["infra"], "rollout__s2")
    plan = request(repo, environment="staging", confirm="staging")
    planned = infra.checkout_and_plan(plan, "manual__gone")
    shutil.rmtree(tmp_path / "work")  # the plan ran on another worker
    infra.apply_approved(plan, planned, "manual__gone")
    staging = helpers.resource_inputs(helpers.state_of(tctx, project, "staging"))
    assert staging["app_service"]["desired_count"] == 2


def test_a_revision_matching_the_infrastructure_plans_no_change(tctx, project, repo, env):
    rollout(project, "staging", repo["infra"], "rollout__s3")
    planned = infra.checkout_and_plan(request(repo, environment="staging", confirm="staging",
                                              git_ref=repo["current"]), "manual__same")
    assert planned["has_changes"] is False
    assert planned["summary"]["resource_changes"] == []


def test_a_tampered_plan_is_not_applied(tctx, project, repo, env):
    rollout(project, "staging", repo["infra"], "rollout__s4")
    plan = request(repo, environment="staging", confirm="staging")
    planned = infra.checkout_and_plan(plan, "manual__tamper")
    state = helpers.state_fingerprint(tctx, project, "staging")
    with pytest.raises(CheckFailed, match="SHA-256"):
        infra.apply_approved(plan, {**planned, "plan_sha256": "0" * 64}, "manual__tamper")
    assert helpers.state_fingerprint(tctx, project, "staging") == state


def test_the_apply_step_applies_nothing_without_a_recorded_approval(tctx, project, repo, env, monkeypatch):
    """issue 11 point 11: the DAG's apply step checks the recorded answer. No answer (the approval
    task marked success by hand, or skipped) and a Reject fail it with the state untouched; only an
    Approve by a person applies."""
    rollout(project, "staging", repo["infra"], "rollout__s7")
    plan = request(repo, environment="staging", confirm="staging")
    planned = infra.checkout_and_plan(plan, "manual__unapproved")
    assert planned["has_changes"]

    dag_ns = runpy.run_path(str(INFRA_DAG))
    apply_step = dag_ns["apply_approved_plan"].function
    ti = SimpleNamespace(dag_id=dag_ns["DAG_ID"], run_id="manual__unapproved", task_id="apply_approved_plan",
                         pushed={})
    ti.xcom_push = lambda key, value: ti.pushed.__setitem__(key, value)
    context = {"ti": ti, "params": {"environment": "staging", "reason": "test"}}
    monkeypatch.setattr(step_module, "context", lambda: context)
    monkeypatch.setitem(apply_step.__wrapped__.__globals__, "context", lambda: context)
    ddb = aws.client(tctx, "dynamodb")
    table = lock.LockRef.from_context(context).table
    assert table == f"{project}-staging-terraform-locks"
    owner = lock.owner_for(ti.dag_id, ti.run_id)
    lock.acquire(ddb, table, "staging", owner)  # the run holds the lock: only the answer is checked
    rejected = approval.answer_from_event("Apply the Terraform rollback plan?", {
        "chosen_options": [approval.REJECT], "responded_by_user": {"id": "ops", "name": "Ops"},
        "responded_at": "2026-12-01T10:00:00+00:00"})
    try:
        before = helpers.state_fingerprint(tctx, project, "staging")
        for answer, seen in ((None, "no recorded answer"), (rejected, f"{approval.REJECT} by Ops")):
            with pytest.raises(AirflowFailException, match=f"approve_plan: seen {seen}"):
                apply_step(plan.to_dict(), planned, answer)
            failure = ti.pushed[step_module.RECORD_KEY]["failure"]
            assert failure["checked"] == "approve_plan" and "nothing was changed" in failure["next_step"]
            assert helpers.state_fingerprint(tctx, project, "staging") == before
        with pytest.raises(CheckFailed, match="approve_plan"):  # the check itself, under the wrapper
            apply_step.__wrapped__(plan.to_dict(), planned, None)
        assert helpers.state_fingerprint(tctx, project, "staging") == before

        approved = {**rejected, "chosen": approval.APPROVE, "approved": True}
        outputs = apply_step(plan.to_dict(), planned, approved)
    finally:
        lock.release(ddb, table, "staging", owner)
    assert outputs["db_instance_identifier"] == f"{project}-staging-db"
    assert helpers.state_fingerprint(tctx, project, "staging") != before  # an approval does apply
    assert "db_reporting" not in helpers.resource_inputs(helpers.state_of(tctx, project, "staging"))


def test_state_locked_by_another_terraform_fails_with_the_lock_id(tctx, project, repo, env):
    import json

    rollout(project, "staging", repo["infra"], "rollout__s5")
    ddb = aws.client(tctx, "dynamodb")
    table, lock_path = f"{project}-staging-terraform-locks", f"{project}-staging-terraform-state/" \
        f"{project}/staging/terraform.tfstate"
    info = {"ID": "0b29a8b5-a0a2-85bc-8f47-02657099c03c", "Operation": "OperationTypeApply", "Info": "",
            "Who": "someone@elsewhere", "Version": "1.15.5", "Created": "2026-12-01T20:20:42Z",
            "Path": lock_path}
    ddb.put_item(TableName=table, Item={"LockID": {"S": lock_path}, "Info": {"S": json.dumps(info)}})
    try:
        with pytest.raises(CheckFailed) as excinfo:
            infra.checkout_and_plan(request(repo, environment="staging", confirm="staging"), "manual__locked")
    finally:
        ddb.delete_item(TableName=table, Key={"LockID": {"S": lock_path}})
    message = str(excinfo.value)
    assert "Error acquiring the state lock" in message and "someone@elsewhere" in message
    assert "lock id 0b29a8b5-a0a2-85bc-8f47-02657099c03c" in message
    assert "Nothing was changed" in message


def test_an_environment_no_rollout_applied_is_refused(tctx, repo, env, monkeypatch):
    monkeypatch.setenv("BISMAN_PROJECT_NAME", helpers.make_project(tctx))
    with pytest.raises(CheckFailed, match="no recorded Terraform inputs for prod"):
        infra.checkout_and_plan(request(repo), "manual__never")


def test_default_ref_is_the_commit_before_the_current_one_touching_the_directory(repo, env):
    plan = request(repo)
    assert plan.current_commit == repo["current"]
    assert plan.target_commit == repo["baseline"]
    assert plan.subdir == "infra"
    assert infra.changed_files(plan) == [["M", "infra/main.tf"], ["D", "infra/reporting.tf"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"confirm": None}, "confirm: seen ''; expected the environment name 'prod'"),
        ({"confirm": "staging"}, "confirm: seen 'staging'; expected the environment name 'prod'"),
        ({"environment": "dev", "confirm": "dev"}, "environment: seen dev; expected staging or prod"),
        ({"git_ref": "no-such-branch"}, "git ref 'no-such-branch' does not exist"),
        ({"git_ref": "0123456789abcdef0123456789abcdef01234567"}, "does not exist"),
    ],
)
def test_bad_requests_are_refused_and_nothing_changes(tctx, project, repo, env, overrides, message):
    states = [helpers.state_fingerprint(tctx, project, e) for e in ("staging", "prod")]
    head = git(repo["root"], "rev-parse", "HEAD")
    with pytest.raises(CheckFailed, match=message):
        request(repo, **overrides)
    assert [helpers.state_fingerprint(tctx, project, e) for e in ("staging", "prod")] == states
    assert git(repo["root"], "rev-parse", "HEAD") == head


def test_ref_without_the_terraform_directory_is_refused(repo, env):
    with pytest.raises(CheckFailed, match="has no Terraform configuration in infra"):
        request(repo, git_ref=repo["readme_only"])
