"""Fixtures of the Terraform tests: the sandbox's moto and Terraform inputs, a project of the test
module's own in moto, and the environment a Terraform task has."""

from __future__ import annotations

import pytest

from tests.terraform import helpers


@pytest.fixture(scope="session")
def ctx():
    return helpers.sandbox()


@pytest.fixture(scope="module")
def project(ctx) -> str:
    return helpers.make_project(ctx)


@pytest.fixture
def tf_env(ctx, monkeypatch) -> dict[str, str]:
    env = helpers.terraform_env(ctx)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BISMAN_TERRAFORM_BIN", raising=False)
    return env
