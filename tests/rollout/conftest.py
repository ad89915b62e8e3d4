"""The rollout phases' tests against the sandbox: the sandbox, the connections its workers get, and
the Terraform outputs its seeding stands for."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ctx(sandbox):
    """The whole sandbox, up (the session's)."""
    return sandbox


@pytest.fixture(scope="module")
def sandbox_env(sandbox):
    """The sandbox, with the Airflow connections it gives its workers in this process's environment."""
    from bisman_sandbox import launcher

    with pytest.MonkeyPatch.context() as mp:
        for key, value in launcher.airflow_connection_env(sandbox).items():
            mp.setenv(key, value)
        yield sandbox


def seeded_outputs(ctx) -> dict:
    """The Terraform outputs the phases read, as the sandbox's seeding names them."""
    from bisman_sandbox import aws
    from bisman_sandbox.context import HOST

    r, n = aws.seeded(ctx), aws.names()
    return {
        "db_instance_identifier": r.db_instance_identifier, "db_replica_identifier": r.db_replica_identifier,
        "db_security_group_id": r.db_security_group_id, "app_secrets_arn": r.app_secrets_arn,
        "db_client_security_group_ids": [r.app_security_group_id, r.pgbouncer_security_group_id],
        "app_log_group": r.app_log_group, "redis_replication_group_id": n.redis_replication_group_id,
        "ecs_cluster_name": n.ecs_cluster_name, "ecs_service_name": n.ecs_service_name,
        "alb_arn": r.alb_arn, "waf_web_acl_arn": r.waf_web_acl_arn,
        "api_base_url": f"http://{HOST}:{ctx.port('app')}",
    }
