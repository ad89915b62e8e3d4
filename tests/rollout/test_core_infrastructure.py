"""Phase 1's checks without a scheduler: PgBouncer against the sandbox's real PgBouncer and
primary (and misconfigured: Terraform's primary elsewhere, no entry for the database), the health
and pooling verdicts including their failures, the RDS wait, and the approval's question."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import core_infrastructure as core
from bisman_ops.rollout.settings import RolloutSettings
from bisman_sandbox import context as sc
from bisman_sandbox.context import HOST, SandboxContext

PLANNED = {
    "has_changes": True,
    "headline": "DATA AT RISK: 1 stateful resource(s) destroyed or replaced; 0 to add, 0 to change, "
                "0 to destroy, 1 to replace",
    "markdown": "## ⚠ Stateful resources destroyed or replaced\n- **REPLACE** `terraform_data.db_primary`",
    "summary": {"stateful_at_risk": [{"address": "terraform_data.db_primary", "type": "aws_db_instance",
                                      "action": "replace", "reason": ""}]},
    "plan_uri": "s3://bisman-erp-staging-terraform-state/plans/x.tfplan",
    "plan_sha256": "ab" * 32,
}


@pytest.fixture(autouse=True)
def airflow_connections(request, monkeypatch):
    """The sandbox's Airflow connections, for the product's own connectors."""
    if "ctx" in request.fixturenames:
        from bisman_sandbox import launcher

        for key, value in launcher.airflow_connection_env(request.getfixturevalue("ctx")).items():
            monkeypatch.setenv(key, value)


def connections(ctx: SandboxContext):
    from bisman_ops import config
    from bisman_ops.clients import pgbouncer, postgres

    return pgbouncer.connect(), postgres.connect(config.APP_DB_CONN_ID, autocommit=True)


def outputs(ctx: SandboxContext, **overrides) -> dict:
    return {"db_name": sc.DB_NAME, "db_primary_address": HOST, "db_port": ctx.port("postgres_primary"),
            **overrides}


def test_pgbouncer_in_front_of_terraforms_primary_passes(ctx):
    admin, app = connections(ctx)
    with admin, app:
        measured = core.pgbouncer_fronts_primary(admin, app, outputs(ctx))
    assert measured["query_landed_on"] == "primary"
    assert measured["pgbouncer_target"] == measured["terraform_primary"]


def test_pgbouncer_pointing_elsewhere_than_terraforms_primary_fails_naming_both(ctx):
    admin, app = connections(ctx)
    with admin, app, pytest.raises(CheckFailed) as failed:
        core.pgbouncer_fronts_primary(admin, app, outputs(ctx, db_port=ctx.port("postgres_replica")))
    primary, replica = ctx.port("postgres_primary"), ctx.port("postgres_replica")
    expected = f"PgBouncer points {sc.DB_NAME} at {HOST}:{primary}, Terraform's primary is {HOST}:{replica}"
    assert expected in str(failed.value)
    # Same port, another host name: the product compares what it is told, no localhost equivalence.
    admin, app = connections(ctx)
    with admin, app, pytest.raises(CheckFailed, match="Terraform's primary is localhost"):
        core.pgbouncer_fronts_primary(admin, app, outputs(ctx, db_primary_address="localhost"))


def test_pgbouncer_without_an_entry_for_the_database_fails_listing_the_entries(ctx):
    admin, app = connections(ctx)
    with admin, app, pytest.raises(CheckFailed, match=r"PgBouncer's \[databases\] entry for bisman_oth") as f:
        core.pgbouncer_fronts_primary(admin, app, outputs(ctx, db_name="bisman_other"))
    assert sc.DB_NAME in f.value.measured["pgbouncer_databases"]


def test_health_fails_on_an_unhealthy_endpoint_and_on_no_transaction_through_pgbouncer():
    results = [{"path": "/health", "status": 200, "body": "ok"},
               {"path": "/api/health/db", "status": 503, "body": "db down"}]
    with pytest.raises(CheckFailed) as failed:
        core.app_health(results, 0, "bisman_staging")
    assert "GET /api/health/db answered 503: db down" in failed.value.seen
    assert "PgBouncer has served no transaction for bisman_staging" in failed.value.seen
    ok = [{"path": "/health", "status": 200, "body": "ok"}]
    assert core.app_health(ok, 12, "bisman_staging")["pgbouncer_transactions_served"] == 12


@pytest.mark.parametrize(("measured", "problem"), [
    ({"pool_size": 20, "peak_server_connections": 30, "peak_client_connections": 40, "requests_ok": 9},
     "30 server connections exceed the pool size 20"),
    ({"pool_size": 20, "peak_server_connections": 12, "peak_client_connections": 12, "requests_ok": 9},
     "client connections (12) never exceeded server connections (12): pooling not shown"),
    ({"pool_size": 20, "peak_server_connections": 5, "peak_client_connections": 24, "requests_ok": 0},
     "no request succeeded under load"),
])
def test_pooling_fails_when_pgbouncer_does_not_pool(measured, problem):
    with pytest.raises(CheckFailed) as failed:
        core.pooling_verdict(measured)
    assert problem in failed.value.seen


def test_pooling_passes_with_more_clients_than_servers_within_the_pool():
    measured = {"pool_size": 20, "peak_server_connections": 8, "peak_client_connections": 24,
                "requests_ok": 50}
    assert core.pooling_verdict(measured) is measured


def test_rds_wait_is_done_when_available_and_fails_at_once_for_an_unknown_instance():
    with mock_aws():
        rds = boto3.client("rds", region_name="us-east-1")
        rds.create_db_instance(DBInstanceIdentifier="bisman-erp-staging-db", Engine="postgres",
                               DBInstanceClass="db.r6g.large", MasterUsername="u",
                               MasterUserPassword="p" * 12, AllocatedStorage=20)
        assert core.rds_available_poke(rds, "bisman-erp-staging-db").done
        with pytest.raises(CheckFailed, match=r"bisman-erp-staging-gone.*not found"):
            core.rds_available_poke(rds, "bisman-erp-staging-gone")


def test_the_approval_asks_with_the_data_at_risk_first_and_the_plans_sha(tmp_path):
    (tmp_path / "main.tf").write_text("")
    s = RolloutSettings.from_params({"environment": "staging", "project_name": "bisman-erp",
                                     "aws_region": "us-east-1", "db_instance_class": "db.r6g.large",
                                     "redis_node_type": "cache.r6g.large", "app_image": "bisman-erp:2",
                                     "domain_name": "api.staging.bisman.test",
                                     "terraform_dir": str(tmp_path)})
    question = core.approval_question(PLANNED, s)
    assert question["subject"].startswith("Apply the Terraform plan to staging? DATA AT RISK")
    assert question["body"].startswith("# ⚠ THIS PLAN DESTROYS OR REPLACES A DATABASE OR REDIS")
    assert f"`{'ab' * 32}`" in question["body"] and "| app_image | bisman-erp:2 |" in question["body"]
    section = core.plan_section(PLANNED).as_dict()["values"]
    assert section["stateful resources destroyed or replaced"] == ["replace terraform_data.db_primary"]


def test_servers_left_open_by_earlier_traffic_do_not_hide_pooling():
    # Warm pool: all five server connections open, two of them busy, while five clients are served.
    measured = {"pool_size": 5, "peak_server_connections": 2, "peak_server_connections_open": 5,
                "peak_client_connections": 5, "requests_ok": 9}
    assert core.pooling_verdict(measured) is measured
    too_many = {**measured, "peak_server_connections_open": 6}
    with pytest.raises(CheckFailed, match="6 server connections exceed the pool size 5"):
        core.pooling_verdict(too_many)
