"""Fixtures for the rollback logic: the sandbox's moto, PostgreSQL, PgBouncer and Terraform workspace
(started once, never stopped here), boto3 clients on them, and a fingerprint of everything a
refused rollback must leave as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from bisman_sandbox import aws, pgbouncer, postgres, terraform_workspace
from bisman_sandbox.context import SandboxContext

ROOT = Path(__file__).resolve().parents[2]
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@bisman.test"]


@pytest.fixture(scope="session")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    for module in (postgres, pgbouncer, aws, terraform_workspace):
        module.up(c)
    return c


@pytest.fixture(scope="session")
def clients(ctx):
    return {s: aws.client(ctx, s) for s in ("ecs", "rds", "dynamodb", "s3", "secretsmanager")}


def primary_dsn(ctx) -> str:
    c = postgres.connections(ctx)["bisman_app_db_primary"]
    return (
        f"host={c['host']} port={c['port']} dbname={c['schema']} user={c['login']} password={c['password']}"
    )


def _state_objects(s3, bucket: str) -> list[tuple[str, str]]:
    """Terraform's state and plans in the state bucket (run reports excluded: refusals write one)."""
    try:
        listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    except Exception:
        return []
    return sorted((o["Key"], o["ETag"]) for o in listed if not o["Key"].startswith("reports/"))


def world(ctx, clients, environment: str = "staging") -> dict:
    """What a refused rollback must not change: moto (ECS, RDS, secret, lock items, Terraform's
    objects in the state bucket), the sandbox database, PgBouncer's pools."""
    ecs, rds = clients["ecs"], clients["rds"]
    names = aws.names(environment)
    service = ecs.describe_services(cluster=names.ecs_cluster_name, services=[names.ecs_service_name])[
        "services"
    ][0]
    instances = sorted(
        (i["DBInstanceIdentifier"], i["DBInstanceStatus"], i["DBInstanceClass"])
        for i in rds.describe_db_instances()["DBInstances"]
    )
    snapshots = sorted(
        (s["DBSnapshotIdentifier"], s["Status"]) for s in rds.describe_db_snapshots()["DBSnapshots"]
    )
    secret = clients["secretsmanager"].list_secret_version_ids(SecretId=names.app_secret_name)["Versions"]
    locks = clients["dynamodb"].scan(TableName=names.lock_table)["Items"]
    with psycopg.connect(primary_dsn(ctx), connect_timeout=5) as conn:
        db = conn.execute(
            "SELECT (SELECT count(*) FROM pg_database), (SELECT md5(string_agg(t::text, ',' "
            "ORDER BY id)) FROM tenants t), (SELECT count(*) FROM events)"
        ).fetchone()
    with psycopg.connect(pgbouncer.dsn(ctx, "admin"), autocommit=True, prepare_threshold=None) as admin:
        pools = sorted((r[0], r[1], r[2]) for r in admin.execute("SHOW DATABASES").fetchall())
    return {
        "service": (
            service["taskDefinition"],
            service["desiredCount"],
            [d["id"] for d in service["deployments"]],
        ),
        "task_definitions": ecs.list_task_definitions(familyPrefix=names.app_task_family)[
            "taskDefinitionArns"
        ],
        "instances": instances,
        "snapshots": snapshots,
        "secret_versions": sorted((v["VersionId"], tuple(v.get("VersionStages", []))) for v in secret),
        "locks": json.dumps(locks, sort_keys=True, default=str),
        "database": db,
        "pgbouncer": pools,
        "terraform_objects": _state_objects(clients["s3"], names.state_bucket),
    }


@pytest.fixture
def unchanged(ctx, clients):
    """Asserts, after the test, that the world is exactly as before it."""
    before = world(ctx, clients)
    yield
    assert world(ctx, clients) == before


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        [*GIT, "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def make_infra_repo(root: Path, ctx) -> dict:
    """An operator's repository (tests.terraform.helpers.make_infra_repo: README only, baseline, then
    a reporting replica and three app tasks) whose current commit the sandbox's staging is rolled out
    with through the Terraform session, so a rollback finds staging's state and recorded inputs.
    ``repo["state"]()`` reads staging's Terraform state from moto's S3."""
    from tests.terraform import helpers

    if root.exists():
        shutil.rmtree(root)
    repo = helpers.make_infra_repo(root)
    helpers.rollout(ctx, aws.names().project_name, "staging", repo["infra"])
    repo["state"] = lambda: helpers.state_of(ctx, aws.names().project_name, "staging")
    return repo
