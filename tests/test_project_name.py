"""issue 11 point 18: the project name comes from one source of deployment configuration
(``config.project_name``, from ``BISMAN_PROJECT_NAME``): the change lock, the rollbacks' resource
names and the rollout's form default all resolve it, and a rollout form naming another project is
refused naming both. No sandbox services needed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bisman_ops import config, params
from bisman_ops.change import lock
from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollback import resource_names
from bisman_ops.rollout.settings import RolloutSettings
from tests.rollout.test_settings_and_secrets import form


@pytest.fixture
def acme(monkeypatch):
    monkeypatch.setenv("BISMAN_PROJECT_NAME", "acme-erp")


@pytest.fixture
def unconfigured(monkeypatch):
    monkeypatch.delenv("BISMAN_PROJECT_NAME", raising=False)


def rollout_form(tmp_path, **overrides) -> dict:
    return form(tmp_path, **{"project_name": "acme-erp", **overrides})


def test_the_lock_names_resolve_the_configured_project(acme):
    run = SimpleNamespace(dag_id="bisman_rollback_application", run_id="manual__1")
    assert lock.names_for({"environment": "prod"}).lock_table == "acme-erp-prod-terraform-locks"
    assert lock.LockRef.from_context({"ti": run, "params": {"environment": "staging"}}).table == (
        "acme-erp-staging-terraform-locks")
    # A form naming another project (refused by the rollout's validation) never moves the lock
    # (nor the run report, which uses the same names) away from the deployment's own table.
    assert lock.names_for({"environment": "staging", "project_name": "other-erp"}).project_name == "acme-erp"


def test_the_rollbacks_resource_names_resolve_the_configured_project(acme):
    names = resource_names("prod")
    assert (names.project_name, names.state_bucket, names.ecs_service_name) == (
        "acme-erp", "acme-erp-prod-terraform-state", "acme-erp-prod")
    assert resource_names("staging").lock_table == lock.names_for({"environment": "staging"}).lock_table
    assert config.deployment({"BISMAN_PROJECT_NAME": "acme-erp", "BISMAN_ENVIRONMENT": "prod"}) == names


def test_without_a_configured_project_the_rollout_form_names_it_and_the_default_is_bisman_erp(unconfigured):
    assert lock.names_for({"environment": "staging", "project_name": "acme-erp"}).project_name == "acme-erp"
    assert lock.names_for({"environment": "staging"}).project_name == "bisman-erp"
    assert resource_names("staging").project_name == "bisman-erp"
    assert config.project_name_mismatch("acme-erp") is None


def test_a_rollout_form_naming_another_project_is_refused_naming_both(acme, tmp_path):
    with pytest.raises(CheckFailed) as refused:
        RolloutSettings.from_params(rollout_form(tmp_path, project_name="other-erp"))
    message = str(refused.value)
    assert "project_name='other-erp'" in message and "BISMAN_PROJECT_NAME='acme-erp'" in message
    assert "nothing was changed" in message
    assert RolloutSettings.from_params(rollout_form(tmp_path)).names.lock_table == (
        "acme-erp-staging-terraform-locks")


def test_the_rollout_form_defaults_to_the_configured_project(acme):
    assert params.project_name().value == "acme-erp"


def test_the_sandbox_rehearsal_form_agrees_with_the_sandbox_configuration():
    from bisman_sandbox import aws
    from bisman_sandbox.context import SandboxContext
    from bisman_sandbox.rollout_conf import rollout_conf

    ctx = SandboxContext.from_env()
    configured = aws.settings(ctx)
    assert config.project_name_mismatch(rollout_conf(ctx)["project_name"], configured) is None
    assert config.project_name(environ=configured) == aws.names().project_name
