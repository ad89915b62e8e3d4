"""Rollout inputs and secrets are judged before anything changes: every bad value is named at once,
and no message carries a secret's value."""

from __future__ import annotations

import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import preflight
from bisman_ops.rollout.settings import RolloutSettings

GOOD_SECRETS = {
    "JWT_SECRET": "k3Jq9xZ-vT1mW8pQ4rY7uE2aS5dF0gH6jL",
    "DB_PASSWORD": "Zx8-vB2nM5qW9eR4tY7uI1oP3",
    "REDIS_PASSWORD": "Lk4-jH7gF1dS8aQ2wE5rT9yU6",
    "STRIPE_SECRET_KEY": "sk_test_51Habcdefghijklmnop",
    "STRIPE_WEBHOOK_SECRET": "whsec_abcdef123456",
    "SMTP_USER": "alerts",
    "SMTP_PASSWORD": "smtp-password-value",
}


def form(tmp_path, **overrides) -> dict:
    (tmp_path / "main.tf").write_text("")
    values = {
        "environment": "staging",
        "project_name": "bisman-erp",
        "aws_region": "us-east-1",
        "db_instance_class": "db.r6g.large",
        "redis_node_type": "cache.r6g.large",
        "app_image": "bisman-erp:1.4.2",
        "domain_name": "api.staging.bisman.test",
        "terraform_dir": str(tmp_path),
    }
    values.update(overrides)
    return values


def test_good_form_gives_settings_with_the_drill_on_for_staging_only(tmp_path):
    assert RolloutSettings.from_params(form(tmp_path)).replica_failure_drill is True
    assert RolloutSettings.from_params(form(tmp_path, environment="prod")).replica_failure_drill is False
    s = RolloutSettings.from_params(form(tmp_path, replica_failure_drill=True, environment="prod"))
    assert s.replica_failure_drill is True
    assert set(s.tfvars()) == {
        "project_name",
        "environment",
        "aws_region",
        "db_instance_class",
        "redis_node_type",
        "app_image",
        "domain_name",
    }


def test_every_bad_value_is_named_in_one_refusal(tmp_path):
    with pytest.raises(CheckFailed) as excinfo:
        RolloutSettings.from_params(
            form(
                tmp_path,
                environment="production",
                domain_name="Not A Domain",
                app_image="bisman-erp",
                terraform_dir=str(tmp_path / "missing"),
                replica_lag_threshold_seconds=0,
                perf_requests=60,
                perf_concurrency=100,
            )
        )
    message = str(excinfo.value)
    for expected in (
        "unknown environment 'production'",
        "domain_name='Not A Domain'",
        "app_image",
        "is not a directory",
        "replica_lag_threshold_seconds=0",
        "perf_requests=60 is fewer than perf_concurrency=100",
    ):
        assert expected in message
    assert "nothing was changed" in message


def test_terraform_dir_without_configuration_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckFailed, match="holds no Terraform configuration"):
        RolloutSettings.from_params(form(tmp_path, terraform_dir=str(tmp_path / "empty")))


def test_good_secrets_pass():
    verdict = preflight.check_app_secrets(GOOD_SECRETS, "staging", generate_allowed=False)
    assert verdict.problems == []
    assert verdict.measured["JWT_SECRET"].endswith("bits")


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("JWT_SECRET", "short-jwt", "JWT_SECRET is 72 bits (at least 256 needed)"),
        ("JWT_SECRET", "a" * 40, "JWT_SECRET uses only 1 distinct characters"),
        ("DB_PASSWORD", "hunter2", "DB_PASSWORD has 7 characters"),
        ("REDIS_PASSWORD", "abababababababababababab", "REDIS_PASSWORD uses only 2 distinct"),
        ("STRIPE_SECRET_KEY", "pk_test_abcdefgh", "starts with pk_test_; staging needs a sk_test_ key"),
    ],
)
def test_weak_or_wrong_secret_is_named_without_its_value(key, value, expected):
    verdict = preflight.check_app_secrets({**GOOD_SECRETS, key: value}, "staging", generate_allowed=False)
    assert any(expected in p for p in verdict.problems), verdict.problems
    assert all(value not in p for p in verdict.problems)
    assert all(value not in m for m in verdict.measured.values())


def test_prod_refuses_a_test_stripe_key():
    verdict = preflight.check_app_secrets(GOOD_SECRETS, "prod", generate_allowed=False)
    assert verdict.problems == ["STRIPE_SECRET_KEY starts with sk_test_; prod needs a sk_live_ key"]


def test_missing_passwords_are_generated_only_when_allowed_and_stripe_never():
    values = {k: v for k, v in GOOD_SECRETS.items() if k not in ("DB_PASSWORD", "STRIPE_SECRET_KEY")}
    refused = preflight.check_app_secrets(values, "staging", generate_allowed=False)
    assert "DB_PASSWORD is missing (or tick generate_missing_secrets)" in refused.problems
    allowed = preflight.check_app_secrets(values, "staging", generate_allowed=True)
    assert allowed.to_generate == ["DB_PASSWORD"]
    assert allowed.problems == ["STRIPE_SECRET_KEY is missing"]
    generated = preflight.generate_secret_values(["JWT_SECRET", "DB_PASSWORD"])
    assert preflight.jwt_secret_problem(generated["JWT_SECRET"]) is None
    assert preflight.secret_strength_problem("DB_PASSWORD", generated["DB_PASSWORD"]) is None
    with pytest.raises(ValueError, match="cannot be generated"):
        preflight.generate_secret_values(["STRIPE_SECRET_KEY"])
