"""The Terraform wrapper against the sandbox's Terraform stand-in (a real subprocess speaking the CLI)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from bisman_ops import terraform
from bisman_ops.terraform import Terraform, TerraformError, check_outputs, summarize_plan

ROOT = Path(__file__).resolve().parents[2]
STANDIN = ROOT / "include" / "sandbox" / "bin" / "terraform"
CONFIG = ROOT / "include" / "sandbox" / "terraform" / "main.tf.json"
TFVARS = {
    "project_name": "bisman-erp",
    "environment": "staging",
    "aws_region": "us-east-1",
    "db_instance_class": "db.r6g.large",
    "redis_node_type": "cache.r6g.large",
    "app_image": "bisman-erp:sandbox-2",
    "domain_name": "api.staging.bisman.test",
}


@pytest.fixture
def tf(tmp_path) -> Terraform:
    shutil.copy(CONFIG, tmp_path / CONFIG.name)
    t = Terraform(str(STANDIN), tmp_path, timeout=60)
    t.init({"bucket": "bisman-erp-staging-terraform-state", "key": "staging/terraform.tfstate",
            "region": "us-east-1", "encrypt": True})
    return t


def test_version_reads_terraform_version_json(tf, monkeypatch):
    monkeypatch.setenv("TF_STANDIN_VERSION", "1.4.6")
    version = tf.version()
    assert version == "1.4.6"
    assert not terraform.version_at_least(version, "1.5.0")
    assert terraform.version_at_least("1.5.0") and terraform.version_at_least("v1.10.2")


def test_tfvars_file_is_private_and_its_secret_values_are_redacted_from_errors(tf, tmp_path):
    path = tf.write_tfvars({**TFVARS, "db_password": "hunter2-very-secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert 'environment = "staging"' in path.read_text()
    # A binary that fails echoing the tfvars to stderr, as a provider error quoting a value might.
    echo = tmp_path / "echo-terraform"
    echo.write_text("#!/bin/sh\ncat terraform.tfvars >&2\nexit 1\n")
    echo.chmod(0o755)
    tf.binary = str(echo)
    with pytest.raises(TerraformError) as excinfo:
        tf.plan("tfplan")
    assert "hunter2-very-secret" not in str(excinfo.value)
    assert 'db_password = "***"' in excinfo.value.stderr


def test_plan_reports_changes_then_none_after_apply_of_exactly_that_plan(tf, tmp_path):
    tf.write_tfvars(TFVARS)
    assert tf.plan("tfplan") is True
    summary = summarize_plan(tf.show_json(tmp_path / "tfplan"))
    assert summary.adds > 10 and summary.destroys == 0 and not summary.stateful_at_risk
    tf.apply("tfplan")
    assert check_outputs(tf.outputs()) == []
    assert tf.plan("tfplan2") is False


def test_stale_plan_is_refused_so_only_the_approved_plan_is_ever_applied(tf):
    tf.write_tfvars(TFVARS)
    tf.plan("first")
    tf.plan("second")
    tf.apply("second")
    with pytest.raises(TerraformError, match="stale"):
        tf.apply("first")


def test_plan_that_replaces_the_database_lists_it_first(tf, tmp_path):
    tf.write_tfvars(TFVARS)
    tf.plan("tfplan")
    tf.apply("tfplan")
    tf.write_tfvars({**TFVARS, "project_name": "bisman-erp2", "app_image": "bisman-erp:sandbox-3"})
    assert tf.plan("tfplan") is True
    summary = summarize_plan(tf.show_json(tmp_path / "tfplan"))
    assert summary.headline().startswith("DATA AT RISK")
    risky = {c.address for c in summary.stateful_at_risk}
    assert {"aws_db_instance.primary", "aws_elasticache_replication_group.redis"} <= risky
    assert summary.resource_changes[0].address in risky
    markdown = summary.to_markdown()
    assert markdown.index("aws_db_instance.primary") < markdown.index("**Plan:**")


def test_failed_apply_raises_with_the_resource_that_failed(tf, monkeypatch):
    tf.write_tfvars(TFVARS)
    tf.plan("tfplan")
    monkeypatch.setenv("TF_STANDIN_FAIL_APPLY_AFTER", "3")
    with pytest.raises(TerraformError, match="apply failed") as excinfo:
        tf.apply("tfplan")
    assert excinfo.value.returncode == 1
    assert "injected" in excinfo.value.stderr


def test_missing_binary_says_which_setting_to_fix(tmp_path):
    with pytest.raises(TerraformError, match="BISMAN_TERRAFORM_BIN"):
        Terraform(str(tmp_path / "no-terraform"), tmp_path).version()


def test_summary_counts_each_kind_of_change():
    def change(address: str, *actions: str) -> dict:
        return {"address": address, "type": address.split(".")[-2], "change": {"actions": list(actions)}}

    plan = {"resource_changes": [
        change("aws_ecs_service.app", "update"),
        change("aws_lb.main", "create"),
        change("aws_security_group.x", "delete"),
        change("aws_rds_cluster.c", "create", "delete"),
        change("data.aws_caller_identity.me", "read"),
        change("aws_ecs_cluster.main", "no-op"),
    ]}
    s = summarize_plan(plan)
    assert (s.adds, s.changes, s.destroys, s.replaces) == (1, 1, 1, 1)
    assert [c.address for c in s.stateful_at_risk] == ["aws_rds_cluster.c"]
    assert s.has_changes and not summarize_plan({"resource_changes": []}).has_changes
    assert json.loads(json.dumps(s.to_dict()))["stateful_at_risk"][0]["action"] == "replace"


def test_check_outputs_names_missing_and_empty_outputs():
    outputs = {name: "x" for name in terraform.REQUIRED_OUTPUTS}
    assert check_outputs(outputs) == []
    del outputs["db_replica_identifier"]
    outputs["alb_arn"] = ""
    assert check_outputs(outputs) == ["output db_replica_identifier missing", "output alb_arn empty"]
