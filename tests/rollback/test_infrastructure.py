"""Infrastructure rollback logic with real git and the Terraform stand-in."""

from __future__ import annotations

import hashlib
import json

import pytest

from bisman_ops.rollback import RollbackFailed, RollbackRefused
from bisman_ops.rollback import infrastructure as infra
from bisman_sandbox import terraform_workspace
from tests.rollback.conftest import git, make_infra_repo


@pytest.fixture(scope="module")
def repo(ctx, tmp_path_factory):
    return make_infra_repo(tmp_path_factory.mktemp("infra-repo") / "ops", ctx)


@pytest.fixture
def tf_env(ctx, monkeypatch):
    for key, value in terraform_workspace.settings(ctx).items():
        monkeypatch.setenv(key, value)


def state_fingerprint(ctx) -> str:
    backend = terraform_workspace.backend_dir(ctx)
    h = hashlib.sha256()
    for path in sorted(p for p in backend.rglob("*") if p.is_file()):
        h.update(path.read_bytes())
    return h.hexdigest()


def request(repo, **overrides):
    args = {
        "environment": "staging",
        "git_ref": None,
        "terraform_dir": str(repo["infra"]),
        "confirm": "staging",
    } | overrides
    return infra.plan_request(**args)


def test_default_ref_is_the_commit_before_the_current_one_touching_the_directory(repo):
    plan = request(repo)
    assert plan.current_commit == repo["current"]
    assert plan.target_commit == repo["baseline"]
    assert plan.subdir == "infra"
    assert infra.changed_files(plan) == [["M", "infra/main.tf.json"]]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"confirm": None}, "confirm is empty"),
        ({"confirm": "prod"}, "does not match the environment name 'staging'"),
        ({"environment": "dev", "confirm": "dev"}, "unknown environment 'dev'"),
        ({"git_ref": "no-such-branch"}, "git ref 'no-such-branch' does not exist"),
        ({"git_ref": "0123456789abcdef0123456789abcdef01234567"}, "does not exist"),
    ],
)
def test_bad_requests_are_refused_and_nothing_changes(ctx, repo, unchanged, overrides, message):
    state = state_fingerprint(ctx)
    head = git(repo["root"], "rev-parse", "HEAD")
    with pytest.raises(RollbackRefused, match=message):
        request(repo, **overrides)
    assert state_fingerprint(ctx) == state
    assert git(repo["root"], "rev-parse", "HEAD") == head


def test_ref_without_the_terraform_directory_is_refused(ctx, repo, unchanged):
    state = state_fingerprint(ctx)
    with pytest.raises(RollbackRefused, match="has no Terraform configuration in infra"):
        request(repo, git_ref=repo["readme_only"])
    assert state_fingerprint(ctx) == state


def test_checkout_exports_the_revision_elsewhere_and_leaves_the_working_tree(repo, tmp_path):
    plan = request(repo)
    status = git(repo["root"], "status", "--porcelain", "--ignored")
    config_dir = infra.checkout(plan, tmp_path / "work")
    exported = json.loads((config_dir / "main.tf.json").read_text())
    assert exported["resource"]["aws_ecs_service"]["app"]["desired_count"] == 2
    assert "reporting" not in exported["resource"]["aws_db_instance"]
    assert (config_dir / "terraform.tfvars").exists() and (config_dir / "sandbox.auto.tfvars.json").exists()
    assert not (config_dir / ".git").exists()
    live = json.loads((repo["infra"] / "main.tf.json").read_text())
    assert live["resource"]["aws_ecs_service"]["app"]["desired_count"] == 3
    assert git(repo["root"], "status", "--porcelain", "--ignored") == status


def test_plan_lists_the_stateful_destroy_first_and_a_tampered_plan_is_not_applied(
    ctx, repo, tf_env, tmp_path
):
    plan = request(repo)
    config_dir = infra.checkout(plan, tmp_path / "work")
    result = infra.run_plan(config_dir)
    summary = result["summary"]
    assert result["has_changes"]
    assert summary["stateful_at_risk"] == [
        {"address": "aws_db_instance.reporting", "type": "aws_db_instance", "action": "delete"}
    ]
    assert summary["resource_changes"][0]["address"] == "aws_db_instance.reporting"
    assert "DATA AT RISK" in summary["headline"]
    state = state_fingerprint(ctx)
    with pytest.raises(RollbackFailed, match="changed since it was approved"):
        infra.apply_plan(config_dir, "0" * 64)
    assert state_fingerprint(ctx) == state
