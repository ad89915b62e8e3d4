"""The one Terraform session (bisman_ops.clients.terraform) on real Terraform, moto's S3 and
DynamoDB, through the Airflow AWS connection: per-environment state, clean working directories,
plan files in S3 verified before apply, the environment's recorded inputs."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from bisman_ops.clients.terraform import TerraformSession, TerraformSessionError
from bisman_ops.naming import ResourceNames
from bisman_sandbox import aws, terraform_workspace
from tests.terraform import helpers

pytestmark = pytest.mark.timeout(300)


def session(project: str, environment: str, run_id: str, step: str, tmp_path) -> TerraformSession:
    return TerraformSession(project_name=project, environment=environment, aws_region="us-east-1",
                            run_id=run_id, step=step, work_root=tmp_path / "work")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A configuration directory in git, with an untracked variables file beside it (as a
    directory another run wrote to might have): it must never reach a session's run."""
    repo = tmp_path_factory.mktemp("config")
    terraform_workspace.init_repo(repo)
    (repo / "stray.auto.tfvars").write_text('app_image = "someone-elses:image"\n')
    (repo / "terraform.tfvars").write_text('environment = "staging"\n')
    return repo


def plan_and_apply(project, environment, run_id, tmp_path, source, **overrides) -> dict:
    values = helpers.tfvars(project, environment, **overrides)
    p = session(project, environment, run_id, "plan", tmp_path)
    p.prepare_from_directory(source)
    p.write_tfvars(values)
    planned = p.plan()
    p.cleanup()  # as on another worker: the apply never sees the plan task's directory
    applied = session(project, environment, run_id, "apply", tmp_path).apply(planned, inputs=values)
    return {"planned": planned, "applied": applied}


def test_each_environment_has_its_own_state_and_the_apply_needs_no_plan_directory(
    ctx, project, tf_env, source, tmp_path
):
    staging = plan_and_apply(project, "staging", "manual__s1", tmp_path, source, app_image="erp:staging-7")
    staging_state = helpers.state_of(ctx, project, "staging")
    prod = plan_and_apply(project, "prod", "manual__p1", tmp_path, source, app_image="erp:prod-3")

    assert staging["planned"]["state"] == f"s3://{project}-staging-terraform-state/{project}/staging/terraform.tfstate"
    assert prod["planned"]["state"] == f"s3://{project}-prod-terraform-state/{project}/prod/terraform.tfstate"
    assert helpers.state_of(ctx, project, "staging") == staging_state  # prod's run left it alone
    password = tf_env["TF_VAR_sandbox_db_password"]  # in the plan, marked sensitive
    assert password not in json.dumps([staging, prod])  # summaries, approvals and results never show it
    prod_inputs = helpers.resource_inputs(helpers.state_of(ctx, project, "prod"))
    assert prod_inputs["db_primary"]["identifier"] == f"{project}-prod-db"
    assert "erp:prod-3" in prod_inputs["app_task_definition"]["container_definitions"]
    # The stray variables file of the source directory was not part of the run.
    assert "someone-elses" not in str(prod_inputs)
    assert prod["applied"]["outputs"]["alb_arn"] == aws.seeded(ctx, "prod").alb_arn
    assert staging["applied"]["outputs"]["alb_arn"] == aws.seeded(ctx, "staging").alb_arn
    # Each apply recorded its environment's inputs for a later rollback of that environment.
    assert session(project, "prod", "x", "inputs", tmp_path).recorded_inputs()["app_image"] == "erp:prod-3"
    recorded = session(project, "staging", "x", "inputs", tmp_path).recorded_inputs()
    assert recorded["app_image"] == "erp:staging-7"


def test_unchanged_configuration_plans_no_changes_and_a_retried_apply_applies_nothing(
    ctx, project, tf_env, source, tmp_path
):
    first = plan_and_apply(project, "staging", "manual__n1", tmp_path, source)
    again = session(project, "staging", "manual__n2", "plan", tmp_path)
    again.prepare_from_directory(source)
    again.write_tfvars(helpers.tfvars(project, "staging"))
    assert again.plan()["has_changes"] is False
    state = helpers.state_of(ctx, project, "staging")
    retried = session(project, "staging", "manual__n1", "apply", tmp_path).apply(first["planned"])
    assert retried["applied"] is False and retried["already_applied"] is True
    assert helpers.state_of(ctx, project, "staging") == state


def test_a_plan_file_changed_in_s3_is_not_applied(ctx, project, tf_env, source, tmp_path):
    p = session(project, "staging", "manual__t1", "plan", tmp_path)
    p.prepare_from_directory(source)
    p.write_tfvars(helpers.tfvars(project, "staging", app_image="erp:tampered-1"))
    planned = p.plan()
    assert planned["has_changes"]
    other = session(project, "staging", "manual__t2", "plan", tmp_path)
    other.prepare_from_directory(source)
    other.write_tfvars(helpers.tfvars(project, "staging", app_image="erp:swapped-2"))
    swapped = other.plan()
    s3 = aws.client(ctx, "s3")
    bucket = ResourceNames(project, "staging").state_bucket
    s3.copy_object(Bucket=bucket, Key=planned["plan_key"],
                   CopySource={"Bucket": bucket, "Key": swapped["plan_key"]})
    state = helpers.state_fingerprint(ctx, project, "staging")
    with pytest.raises(TerraformSessionError, match="approved plan file in S3 has SHA-256"):
        session(project, "staging", "manual__t1", "apply", tmp_path).apply(planned)
    assert helpers.state_fingerprint(ctx, project, "staging") == state


def test_a_configuration_bundle_changed_in_s3_is_not_applied(ctx, project, tf_env, source, tmp_path):
    p = session(project, "staging", "manual__c1", "plan", tmp_path)
    p.prepare_from_directory(source)  # the current commit: three application tasks
    p.write_tfvars(helpers.tfvars(project, "staging", app_image="erp:bundle-1"))
    planned = p.plan()
    assert planned["has_changes"]
    other = session(project, "staging", "manual__c2", "plan", tmp_path)
    other.prepare_from_git(source, helpers.git(source, "rev-parse", "HEAD~1"))  # two tasks
    other.write_tfvars(helpers.tfvars(project, "staging", app_image="erp:bundle-1"))
    swapped = other.plan()
    assert swapped["config_sha256"] != planned["config_sha256"]
    s3 = aws.client(ctx, "s3")
    bucket = ResourceNames(project, "staging").state_bucket
    s3.copy_object(Bucket=bucket, Key=planned["config_key"],
                   CopySource={"Bucket": bucket, "Key": swapped["config_key"]})
    state = helpers.state_fingerprint(ctx, project, "staging")
    with pytest.raises(TerraformSessionError, match="configuration of the approved plan in S3 has SHA-256"):
        session(project, "staging", "manual__c1", "apply", tmp_path).apply(planned)
    assert helpers.state_fingerprint(ctx, project, "staging") == state


LEAKY_CONFIGURATION = """
terraform {
  backend "s3" {}
}

variable "connection_note" {
  type      = string
  sensitive = true
}

resource "terraform_data" "leaky" {
  input = "x"
  provisioner "local-exec" {
    command = "echo 'cannot reach ${nonsensitive(var.connection_note)}' >&2; exit 1"
  }
}
"""


def test_an_apply_error_never_shows_a_sensitive_value_of_the_plan(ctx, tf_env, tmp_path):
    from bisman_ops.terraform import TerraformError

    # The value is only in the plan (a variable marked sensitive, with a name that does not look
    # secret): the apply's session learns it from the plan itself, not from its environment.
    fresh = helpers.make_project(ctx)
    config = tmp_path / "leaky"
    config.mkdir()
    (config / "main.tf").write_text(LEAKY_CONFIGURATION)
    note = "db-host-behind-vpn-5c81e2"
    p = session(fresh, "staging", "manual__leak", "plan", tmp_path)
    p.prepare_from_directory(config)
    p.write_tfvars({"connection_note": note})
    planned = p.plan()
    p.cleanup()
    assert note not in json.dumps(planned)
    with pytest.raises(TerraformError) as excinfo:
        session(fresh, "staging", "manual__leak", "apply", tmp_path).apply(planned)
    said = f"{excinfo.value}\n{excinfo.value.stderr}"
    assert "local-exec provisioner error" in said and "cannot reach ***" in said
    assert note not in said


def test_a_plan_made_stale_by_another_apply_is_refused_by_terraform(ctx, project, tf_env, source, tmp_path):
    from bisman_ops.terraform import TerraformError

    plans = []
    for run, image in (("manual__a", "erp:a-1"), ("manual__b", "erp:b-1")):
        p = session(project, "staging", run, "plan", tmp_path)
        p.prepare_from_directory(source)
        p.write_tfvars(helpers.tfvars(project, "staging", app_image=image))
        plans.append(p.plan())
    session(project, "staging", "manual__b", "apply", tmp_path).apply(plans[1])
    with pytest.raises(TerraformError, match="Saved plan is stale"):
        session(project, "staging", "manual__a", "apply", tmp_path).apply(plans[0])


def test_git_export_never_touches_the_work_tree_and_drops_inputs(project, tf_env, source, tmp_path):
    status = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--ignored"],
                            capture_output=True, text=True, check=True).stdout
    head = helpers.git(source, "rev-parse", "HEAD")
    s = session(project, "staging", "manual__g", "plan", tmp_path)
    config_dir = s.prepare_from_git(source, helpers.git(source, "rev-parse", "HEAD~1"))
    assert "app_desired_count = 2" in (config_dir / "main.tf").read_text()
    assert not (config_dir / "stray.auto.tfvars").exists() and not (config_dir / "terraform.tfvars").exists()
    assert "app_desired_count = 3" in (source / "main.tf").read_text()
    assert helpers.git(source, "rev-parse", "HEAD") == head
    assert subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--ignored"],
                          capture_output=True, text=True, check=True).stdout == status
    # Each step of a run starts clean.
    (config_dir / "leftover.tf").write_text("")
    assert not (s.prepare_from_directory(source) / "leftover.tf").exists()


def test_an_environment_never_applied_has_no_recorded_inputs(project, tf_env, tmp_path, ctx):
    fresh = helpers.make_project(ctx)
    with pytest.raises(TerraformSessionError, match="no recorded Terraform inputs for prod"):
        session(fresh, "prod", "x", "inputs", tmp_path).recorded_inputs()
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_directory_outside_git_is_copied_without_state_plans_or_variables(tmp_path):
    plain = tmp_path / "plain"
    terraform_workspace.write_config(plain.mkdir() or plain, desired_count=2)
    for leftover in ("terraform.tfvars", "terraform.tfstate", "old.tfplan", ".terraform/providers/x"):
        (plain / leftover).parent.mkdir(parents=True, exist_ok=True)
        (plain / leftover).write_text("left by another run")
    s = session("bisman-erp", "staging", "manual__plain", "plan", tmp_path)
    config_dir = s.prepare_from_directory(plain)
    copied = sorted(p.relative_to(config_dir).as_posix() for p in config_dir.rglob("*") if p.is_file())
    assert copied == ["main.tf", "outputs.tf", "variables.tf", "versions.tf"]
