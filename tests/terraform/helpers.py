"""What the Terraform tests share: the sandbox's moto (started once, never stopped here), the
environment a Terraform process gets in the sandbox, a project of their own in moto (state buckets and
lock tables for staging and prod), and readers of the states in S3."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

from bisman_ops import config
from bisman_ops.naming import ENVIRONMENTS, ResourceNames
from bisman_sandbox import aws, terraform_workspace
from bisman_sandbox.context import SandboxContext

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@bisman.test"]
TFVARS = {
    "project_name": "bisman-erp",
    "environment": "staging",
    "aws_region": "us-east-1",
    "db_instance_class": "db.r6g.large",
    "redis_node_type": "cache.r6g.large",
    "app_image": "bisman-erp:sandbox-2",
    "domain_name": "api.staging.bisman.test",
}


def sandbox() -> SandboxContext:
    ctx = SandboxContext.from_env()
    aws.up(ctx)
    terraform_workspace.up(ctx)
    return ctx


def terraform_env(ctx: SandboxContext) -> dict[str, str]:
    """What a task running Terraform has in the sandbox: the AWS connection and this machine's inputs."""
    conn = aws.connections(ctx)[config.AWS_CONN_ID]
    return {f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}": json.dumps(conn),
            **terraform_workspace.settings(ctx)}


def make_project(ctx: SandboxContext) -> str:
    """A project name of the test's own with a state bucket and lock table per environment in moto,
    so its states are nobody else's."""
    project = f"tft-{uuid.uuid4().hex[:8]}"
    s3, ddb = aws.client(ctx, "s3"), aws.client(ctx, "dynamodb")
    for environment in ENVIRONMENTS:
        n = ResourceNames(project, environment)
        s3.create_bucket(Bucket=n.state_bucket)
        ddb.create_table(TableName=n.lock_table, KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
    return project


def tfvars(project: str, environment: str, **overrides) -> dict[str, str]:
    return {**TFVARS, "project_name": project, "environment": environment,
            "domain_name": f"api.{environment}.bisman.test", **overrides}


def state_key(project: str, environment: str) -> str:
    return f"{project}/{environment}/terraform.tfstate"


def state_of(ctx: SandboxContext, project: str, environment: str) -> dict | None:
    """The environment's Terraform state as stored in S3 (None before the first apply)."""
    s3 = aws.client(ctx, "s3")
    bucket = ResourceNames(project, environment).state_bucket
    try:
        body = s3.get_object(Bucket=bucket, Key=state_key(project, environment))["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def state_fingerprint(ctx: SandboxContext, project: str, environment: str) -> str:
    state = state_of(ctx, project, environment)
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def resource_inputs(state: dict | None) -> dict[str, dict]:
    """``{resource name: its input}`` of the terraform_data resources in a state."""
    return {r["name"]: r["instances"][0]["attributes"]["input"]["value"]
            for r in (state or {}).get("resources", []) if r["type"] == "terraform_data"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(repo), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def make_infra_repo(root: Path) -> dict:
    """An operator's repository: a README-only first commit, then the sandbox's configuration in
    ``infra/`` (baseline: two app tasks), then a change that scales the service to three and adds a
    reporting replica (a stateful resource, destroyed by a rollback to the baseline)."""
    infra = root / "infra"
    infra.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("BISMAN ERP infrastructure\n")
    (root / ".gitignore").write_text("terraform.tfvars\n.terraform/\n*.tfplan\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "README")
    readme_only = git(root, "rev-parse", "HEAD")
    terraform_workspace.write_config(infra, desired_count=2)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Baseline")
    baseline = git(root, "rev-parse", "HEAD")
    terraform_workspace.write_config(infra, desired_count=3)
    (infra / "reporting.tf").write_text(REPORTING_REPLICA)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "Reporting replica, three app tasks")
    return {"root": root, "infra": infra, "readme_only": readme_only, "baseline": baseline,
            "current": git(root, "rev-parse", "HEAD")}


REPORTING_REPLICA = """
resource "terraform_data" "db_reporting" {
  input = {
    aws_type            = "aws_db_instance"
    identifier          = "${local.prefix}-reporting"
    replicate_source_db = terraform_data.db_primary.output.identifier
    instance_class      = var.db_instance_class
  }
  triggers_replace = { identifier = "${local.prefix}-reporting" }
}
"""


def rollout(ctx: SandboxContext, project: str, environment: str, source: Path, run_id: str = "test__rollout",
            **overrides) -> dict:
    """What the rollout does with the Terraform session, from a test process: plan ``source`` with
    the environment's settings, apply that plan (recording the inputs), in the sandbox's environment."""
    import os

    from bisman_ops.clients.terraform import TerraformSession

    values = tfvars(project, environment, **overrides)
    saved = dict(os.environ)
    os.environ.update(terraform_env(ctx))
    try:
        def session(step: str) -> TerraformSession:
            return TerraformSession(project_name=project, environment=environment, aws_region="us-east-1",
                                    run_id=run_id, step=step)

        plan = session("plan")
        plan.prepare_from_directory(source)
        plan.write_tfvars(values)
        planned = plan.plan()
        plan.cleanup()
        if planned["has_changes"]:
            session("apply").apply(planned, inputs=values)
        else:
            session("apply").record_inputs(values)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return values
