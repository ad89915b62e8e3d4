"""The Terraform stand-in, run as the ``terraform`` executable the DAGs call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bisman_sandbox import terraform_standin
from bisman_sandbox.context import SandboxContext

TERRAFORM = str(terraform_standin.TERRAFORM_BIN)
CONFIG = terraform_standin.SANDBOX_CONFIG_DIR / "main.tf.json"
CONTRACT_OUTPUTS = (
    "db_instance_identifier", "db_replica_identifier", "db_primary_address", "db_replica_address", "db_port",
    "db_name", "db_security_group_id", "pgbouncer_address", "pgbouncer_port", "redis_replication_group_id",
    "redis_primary_endpoint", "redis_port", "ecs_cluster_name", "ecs_service_name", "app_task_family",
    "app_log_group", "app_secrets_arn", "alb_arn", "alb_dns_name", "api_base_url", "certificate_arn",
    "waf_web_acl_arn",
)
TFVARS = (
    'environment = "staging"\n'
    'app_image = "registry.example/bisman-erp:1.4.2"\n'
    'domain_name = "api.bisman.example"\n'
)

pytestmark = pytest.mark.timeout(120)


def tf(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the stand-in as the DAGs do, from a minimal PATH without the venv's python."""
    base = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}
    return subprocess.run([TERRAFORM, f"-chdir={workdir}", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, check=False)


@pytest.fixture
def workdir(tmp_path) -> Path:
    shutil.copy(CONFIG, tmp_path / "main.tf.json")
    (tmp_path / "terraform.tfvars").write_text(TFVARS)
    return tmp_path


@pytest.fixture
def initialized(workdir) -> Path:
    r = tf(workdir, "init", "-input=false", "-no-color")
    assert r.returncode == 0, r.stderr
    return workdir


@pytest.fixture
def applied(initialized) -> Path:
    assert tf(initialized, "plan", "-input=false", "-out=tfplan").returncode == 0
    r = tf(initialized, "apply", "-input=false", "tfplan")
    assert r.returncode == 0, r.stderr
    return initialized


def show(workdir: Path, plan: str) -> dict:
    r = tf(workdir, "show", "-json", plan)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def actions(plan: dict) -> dict[str, list[str]]:
    return {c["address"]: c["change"]["actions"] for c in plan["resource_changes"]}


def state(workdir: Path) -> dict:
    return json.loads((workdir / "terraform.tfstate").read_text())


def edit_config(workdir: Path, edit) -> None:
    path = workdir / "main.tf.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))


def test_version_json_reports_terraform_1_9_8_without_the_venv_on_path(tmp_path):
    r = tf(tmp_path, "version", "-json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["terraform_version"] == "1.9.8"


def test_version_can_be_overridden_and_an_old_version_fails_required_version(workdir):
    r = tf(workdir, "version", "-json", env={"TF_STANDIN_VERSION": "1.4.0"})
    assert json.loads(r.stdout)["terraform_version"] == "1.4.0"

    r = tf(workdir, "init", "-input=false", env={"TF_STANDIN_VERSION": "1.4.0"})
    assert r.returncode == 1
    assert "Unsupported Terraform Core version" in r.stderr


@pytest.mark.parametrize(
    "command", [["plan", "-input=false"], ["apply", "-auto-approve"], ["output", "-json"], ["show", "-json"]]
)
def test_commands_before_init_fail_asking_for_init(workdir, command):
    r = tf(workdir, *command)
    assert r.returncode == 1
    assert 'Backend initialization required, please run "terraform init"' in r.stderr
    assert not (workdir / "terraform.tfstate").exists()


def test_init_records_backend_config_from_the_command_line(workdir):
    r = tf(workdir, "init", "-input=false", "-backend-config=bucket=other-bucket", "-backend-config=key=k")
    assert r.returncode == 0, r.stderr
    assert "Terraform has been successfully initialized!" in r.stdout
    record = json.loads((workdir / ".terraform" / "terraform.tfstate").read_text())["backend"]
    assert record["type"] == "s3"
    assert (record["config"]["bucket"], record["config"]["key"]) == ("other-bucket", "k")

    r = tf(workdir, "init", "-input=false", "-backend-config=bucket=third-bucket")
    assert r.returncode == 1
    assert "Backend configuration changed" in r.stderr
    assert tf(workdir, "init", "-reconfigure", "-backend-config=bucket=third-bucket").returncode == 0


def test_init_refuses_an_s3_backend_without_a_bucket(workdir):
    edit_config(workdir, lambda c: c["terraform"]["backend"]["s3"].pop("bucket"))
    r = tf(workdir, "init", "-input=false")
    assert r.returncode == 1
    assert 'The argument "bucket" is required, but was not set.' in r.stderr


def test_first_plan_exits_2_and_show_json_lists_every_resource_as_create(initialized):
    r = tf(initialized, "plan", "-input=false", "-no-color", "-out=tfplan", "-detailed-exitcode")
    assert r.returncode == 2, r.stderr
    assert "Plan: 14 to add, 0 to change, 0 to destroy." in r.stdout

    plan = show(initialized, "tfplan")
    assert plan["format_version"] == "1.2"
    assert set(map(tuple, actions(plan).values())) == {("create",)}
    assert {"aws_db_instance.primary", "aws_db_instance.replica", "aws_ecs_service.app",
            "aws_wafv2_web_acl.main"} <= set(actions(plan))
    primary = next(c for c in plan["resource_changes"] if c["address"] == "aws_db_instance.primary")
    assert primary["change"]["after"]["identifier"] == "bisman-erp-staging-db"
    assert primary["change"]["before"] is None


def test_apply_saves_state_and_a_second_plan_has_no_changes(applied):
    s = state(applied)
    assert (s["version"], s["serial"]) == (4, 1)
    assert len(s["resources"]) == 14
    r = tf(applied, "plan", "-input=false", "-no-color", "-detailed-exitcode")
    assert r.returncode == 0, r.stderr
    assert "No changes. Your infrastructure matches the configuration." in r.stdout


def test_changing_a_variable_plans_an_in_place_update(applied):
    (applied / "bigger.tfvars").write_text('db_instance_class = "db.r6g.xlarge"\n')
    r = tf(applied, "plan", "-input=false", "-var-file=bigger.tfvars", "-out=tfplan", "-detailed-exitcode")
    assert r.returncode == 2, r.stderr
    changed = {a: acts for a, acts in actions(show(applied, "tfplan")).items() if acts != ["no-op"]}
    assert changed == {"aws_db_instance.primary": ["update"], "aws_db_instance.replica": ["update"]}

    assert tf(applied, "apply", "-input=false", "tfplan").returncode == 0
    resources = {(r["type"], r["name"]): r for r in state(applied)["resources"]}
    primary = resources[("aws_db_instance", "primary")]
    assert primary["instances"][0]["attributes"]["instance_class"] == "db.r6g.xlarge"


def test_changing_a_force_new_attribute_replaces_the_primary_database(applied):
    def unencrypted(config: dict) -> None:
        config["resource"]["aws_db_instance"]["primary"]["storage_encrypted"] = False

    edit_config(applied, unencrypted)
    r = tf(applied, "plan", "-input=false", "-no-color", "-out=tfplan", "-detailed-exitcode")
    assert r.returncode == 2, r.stderr
    assert "# aws_db_instance.primary must be replaced" in r.stdout
    assert "# forces replacement" in r.stdout

    plan = show(applied, "tfplan")
    primary = next(c for c in plan["resource_changes"] if c["address"] == "aws_db_instance.primary")
    assert primary["change"]["actions"] == ["delete", "create"]
    assert primary["change"]["replace_paths"] == [["storage_encrypted"]]
    assert actions(plan)["aws_db_instance.replica"] == ["no-op"]


def test_removed_resource_is_planned_for_deletion(applied):
    edit_config(applied, lambda c: c["resource"].pop("aws_wafv2_web_acl"))
    assert tf(applied, "plan", "-input=false", "-out=tfplan").returncode == 0
    assert actions(show(applied, "tfplan"))["aws_wafv2_web_acl.main"] == ["delete"]


def test_a_plan_is_refused_as_stale_once_the_state_changed(initialized):
    assert tf(initialized, "plan", "-input=false", "-out=first").returncode == 0
    assert tf(initialized, "plan", "-input=false", "-out=second").returncode == 0
    assert tf(initialized, "apply", "-input=false", "first").returncode == 0

    r = tf(initialized, "apply", "-input=false", "second")
    assert r.returncode == 1
    assert "Saved plan is stale" in r.stderr
    assert state(initialized)["serial"] == 1


def test_apply_without_a_plan_file_needs_auto_approve(initialized):
    r = tf(initialized, "apply", "-input=false")
    assert r.returncode == 1
    assert not (initialized / "terraform.tfstate").exists()

    r = tf(initialized, "apply", "-input=false", "-auto-approve")
    assert r.returncode == 0, r.stderr
    assert "Apply complete! Resources: 14 added, 0 changed, 0 destroyed." in r.stdout


def test_undeclared_variable_in_tfvars_warns_like_terraform_and_on_the_command_line_fails(initialized):
    with (initialized / "terraform.tfvars").open("a") as f:
        f.write('db_instance_size = "huge"\n')
    r = tf(initialized, "plan", "-input=false")
    assert r.returncode == 0, r.stderr
    assert "Warning: Value for undeclared variable" in r.stdout
    assert 'variable named "db_instance_size"' in r.stdout

    r = tf(initialized, "plan", "-input=false", "-var", "db_instance_size=huge")
    assert r.returncode == 1
    assert "Error: Value for undeclared variable" in r.stderr


def test_variable_failing_its_validation_fails_the_plan(initialized):
    r = tf(initialized, "plan", "-input=false", "-var=environment=dev")
    assert r.returncode == 1
    assert "Invalid value for variable" in r.stderr
    assert "environment must be staging or prod." in r.stderr


def test_missing_required_variable_fails_the_plan(initialized):
    (initialized / "terraform.tfvars").write_text('environment = "staging"\n')
    r = tf(initialized, "plan", "-input=false")
    assert r.returncode == 1
    assert "No value for required variable" in r.stderr
    assert '"app_image"' in r.stderr


def test_malformed_tfvars_fails_with_the_line(initialized):
    (initialized / "terraform.tfvars").write_text(TFVARS + "not hcl at all\n")
    r = tf(initialized, "plan", "-input=false")
    assert r.returncode == 1
    assert "terraform.tfvars line 4" in r.stderr


def test_failing_mid_apply_keeps_the_resources_already_made_and_exits_1(initialized):
    assert tf(initialized, "plan", "-input=false", "-out=tfplan").returncode == 0
    fail = {"TF_STANDIN_FAIL_APPLY_AFTER": "4"}
    r = tf(initialized, "apply", "-input=false", "-no-color", "tfplan", env=fail)
    assert r.returncode == 1
    assert "Error: creating aws_db_instance.replica" in r.stderr
    assert "aws_db_instance.primary: Creation complete" in r.stdout

    s = state(initialized)
    made = [f"{x['type']}.{x['name']}" for x in s["resources"]]
    assert made == ["aws_security_group.db", "aws_security_group.redis", "aws_security_group.app",
                    "aws_db_instance.primary"]
    assert s["serial"] == 1
    assert s["outputs"] == {}

    # Terraform's recovery: plan again, and only what is missing is created.
    assert tf(initialized, "plan", "-input=false", "-out=again").returncode == 0
    planned = actions(show(initialized, "again"))
    assert planned["aws_db_instance.primary"] == ["no-op"]
    assert planned["aws_db_instance.replica"] == ["create"]


def test_output_json_has_every_contract_output_pointing_at_the_sandbox(initialized):
    ctx = SandboxContext.from_env()
    alb_arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/bisman-erp-staging-alb/ab"
    terraform_standin.write_sandbox_tfvars(initialized, ctx.ports, {"alb_arn": alb_arn})
    assert tf(initialized, "apply", "-input=false", "-auto-approve").returncode == 0

    r = tf(initialized, "output", "-json")
    assert r.returncode == 0, r.stderr
    outputs = json.loads(r.stdout)
    assert set(CONTRACT_OUTPUTS) <= set(outputs)
    assert all(set(o) == {"sensitive", "type", "value"} for o in outputs.values())
    assert outputs["api_base_url"]["value"] == f"http://127.0.0.1:{ctx.port('app')}"
    assert outputs["pgbouncer_port"] == {"sensitive": False, "type": "number", "value": ctx.port("pgbouncer")}
    assert outputs["alb_arn"]["value"] == alb_arn
    assert outputs["db_instance_identifier"]["value"] == "bisman-erp-staging-db"
    assert outputs["db_name"]["value"] == "bisman_staging"
    assert outputs["app_log_group"]["value"] == "/aws/ecs/bisman-erp-staging/app"

    r = tf(initialized, "output", "-raw", "db_replica_identifier")
    assert r.stdout == "bisman-erp-staging-replica"
    r = tf(initialized, "output", "-json", "no_such_output")
    assert r.returncode == 1
    assert 'Output "no_such_output" not found' in r.stderr


def test_show_refuses_a_file_that_is_not_a_plan(initialized):
    (initialized / "notaplan").write_text("hello")
    r = tf(initialized, "show", "-json", "notaplan")
    assert r.returncode == 1
    assert "Failed to read the given file as a state or plan file" in r.stderr


def test_unknown_flag_and_command_fail_like_terraform(initialized):
    r = tf(initialized, "plan", "-bogus")
    assert r.returncode == 1
    assert "flag provided but not defined: -bogus" in r.stderr
    r = tf(initialized, "frobnicate")
    assert r.returncode == 1
    assert 'Terraform has no command named "frobnicate".' in r.stderr


def test_validate_accepts_the_sandbox_configuration(initialized):
    r = tf(initialized, "validate", "-json")
    assert r.returncode == 0, r.stdout
    assert json.loads(r.stdout)["valid"] is True
