"""The three rollback DAGs end to end: triggered through Airflow's REST API with the form's conf, as
from the UI, against the sandbox (moto for AWS, real PostgreSQL/PgBouncer/app, the Terraform
stand-in); approvals answered through the REST API."""

from __future__ import annotations

import json
import time

import pytest

from bisman_ops import change_lock
from bisman_ops.rollback import database as db_rollback
from bisman_sandbox import aws, pgbouncer, sinks
from tests.rollback.conftest import make_infra_repo, world

APP = "bisman_rollback_application"
DB = "bisman_rollback_database"
INFRA = "bisman_rollback_infrastructure"
N = aws.names()
REASON = "INC-4242 release 2 returns 500s on checkout"


@pytest.fixture(scope="module")
def af(sandbox, airflow):
    """Airflow (its sandbox settings come from the launcher), no run of an earlier session in the way."""
    client = airflow
    ddb = aws.client(sandbox, "dynamodb")
    for dag_id in (APP, DB, INFRA):
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
        # A run left waiting by an earlier session (same AIRFLOW_HOME) would queue every new one.
        for state in ("running", "queued"):
            for old in client._call("GET", f"/dags/{dag_id}/dagRuns?state={state}")["dag_runs"]:
                client._call("PATCH", f"/dags/{dag_id}/dagRuns/{old['dag_run_id']}", json={"state": "failed"})
                change_lock.release(ddb, N.lock_table, "staging", f"{dag_id}/{old['dag_run_id']}")
    return client


@pytest.fixture(scope="module")
def clients(sandbox):
    return {s: aws.client(sandbox, s) for s in ("ecs", "rds", "dynamodb", "s3", "secretsmanager")}


@pytest.fixture
def service_on_revision_2(clients):
    ecs = clients["ecs"]
    arn = ecs.describe_task_definition(taskDefinition=f"{N.app_task_family}:2")["taskDefinition"][
        "taskDefinitionArn"
    ]

    def put_back():
        ecs.update_service(
            cluster=N.ecs_cluster_name,
            service=N.ecs_service_name,
            taskDefinition=arn,
            desiredCount=aws.APP_DESIRED_COUNT,
        )

    put_back()
    yield
    put_back()


def answer(af, dag_id: str, run_id: str, task_id: str, option: str) -> None:
    # Airflow 3.3 races when the answer lands before the executor has recorded the pause: the resumed
    # try is then marked up_for_retry and waits for a second answer. A human never answers that fast.
    time.sleep(5)
    af.answer_approval(dag_id, run_id, task_id, option)


def report(clients, dag_id: str, run_id: str) -> dict:
    from bisman_ops.run_report import RunReport, report_keys

    json_key, _ = report_keys(N.reports_prefix, RunReport("", dag_id, run_id))
    body = clients["s3"].get_object(Bucket=N.state_bucket, Key=json_key)["Body"].read()
    return json.loads(body)


def values(rep: dict, title: str) -> dict:
    return next(s["values"] for s in rep["sections"] if s["title"] == title)


def lock_free(clients) -> bool:
    return change_lock.current(clients["dynamodb"], N.lock_table, "staging") is None


def service_td(clients) -> str:
    svc = clients["ecs"].describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])[
        "services"
    ][0]
    return svc["taskDefinition"].rsplit("/", 1)[-1]


def run(af, dag_id: str, conf: dict, timeout: float = 300) -> tuple[str, str]:
    run_id = af.trigger(dag_id, conf)
    return run_id, af.wait_for_run(dag_id, run_id, timeout=timeout)


def app_conf(**overrides) -> dict:
    return {
        "environment": "staging",
        "task_definition": "previous",
        "reason": REASON,
        "confirm": N.ecs_service_name,
        "wait_timeout_seconds": 60,
    } | overrides


# -- application -------------------------------------------------------------------------------------


def test_application_rollback_moves_service_to_previous_revision_and_reports(
    af, sandbox, clients, service_on_revision_2
):
    run_id, state = run(af, APP, app_conf())
    assert state == "success"
    assert service_td(clients) == f"{N.app_task_family}:1"
    rep = report(clients, APP, run_id)
    assert rep["outcome"] == "success" and rep["reason"] == REASON
    plan = values(rep, "Plan")
    assert (plan["current"], plan["target"]) == (f"{N.app_task_family}:2", f"{N.app_task_family}:1")
    assert "running on the target" in values(rep, "Verification")["tasks"]
    assert values(rep, "Change lock released")["released"] is True
    assert lock_free(clients)
    for kind in ("STARTED", "SUCCEEDED"):
        mail = sinks.wait_for_mail(sandbox, lambda m, k=kind: run_id in m["subject"] and k in m["subject"])
        assert REASON in mail["text"]
    sinks.wait_for_slack(sandbox, lambda p: run_id in json.dumps(p) and "SUCCEEDED" in json.dumps(p))


def test_application_rollback_already_on_target_changes_nothing_and_says_so(
    af, clients, service_on_revision_2
):
    before = clients["ecs"].describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])[
        "services"
    ][0]["deployments"]
    run_id, state = run(af, APP, app_conf(task_definition=f"{N.app_task_family}:2"))
    assert state == "success"
    rep = report(clients, APP, run_id)
    assert rep["outcome"] == "no_change"
    assert "already runs" in values(rep, "Plan")["no change"]
    after = clients["ecs"].describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])[
        "services"
    ][0]["deployments"]
    assert [d["id"] for d in after] == [d["id"] for d in before]


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"confirm": "yes"}, "confirm 'yes' does not match the service name"),
        ({"task_definition": "bisman-erp-prod-app:1"}, "belongs to family 'bisman-erp-prod-app'"),
        ({"task_definition": f"{N.app_task_family}:999"}, "does not exist"),
    ],
)
def test_application_rollback_refuses_bad_input_without_change(
    af, sandbox, clients, service_on_revision_2, conf, message
):
    before = world(sandbox, clients)
    run_id, state = run(af, APP, app_conf(**conf))
    assert state == "failed"
    rep = report(clients, APP, run_id)
    assert rep["outcome"] == "refused"
    assert message in rep["error"]
    assert lock_free(clients)
    assert world(sandbox, clients) == before


def test_rollback_is_refused_while_a_rollout_holds_the_lock(af, sandbox, clients, service_on_revision_2):
    ddb = clients["dynamodb"]
    change_lock.acquire(ddb, N.lock_table, "staging", "bisman_rollout/manual__rehearsal", lease_seconds=600)
    try:
        before = world(sandbox, clients)
        run_id, state = run(af, APP, app_conf())
        assert state == "failed"
        rep = report(clients, APP, run_id)
        assert rep["outcome"] == "refused"
        assert (
            "held by bisman_rollout/manual__rehearsal" in rep["error"] and "lease expires at" in rep["error"]
        )
        assert world(sandbox, clients) == before
        assert change_lock.current(ddb, N.lock_table, "staging").owner == "bisman_rollout/manual__rehearsal"
        states = {t["task_id"]: t["state"] for t in af.task_instances(APP, run_id)}
        assert states["update_service"] in ("upstream_failed", "skipped", None)
    finally:
        change_lock.release(ddb, N.lock_table, "staging", "bisman_rollout/manual__rehearsal")


def test_service_that_never_stabilises_fails_with_report_and_lock_released(
    af, sandbox, clients, service_on_revision_2
):
    # Three desired, two placed: moto's deployment never reaches the count, like a service out of capacity.
    clients["ecs"].update_service(cluster=N.ecs_cluster_name, service=N.ecs_service_name, desiredCount=3)
    run_id, state = run(af, APP, app_conf(wait_timeout_seconds=30))
    assert state == "failed"
    rep = report(clients, APP, run_id)
    assert rep["outcome"] == "failed"
    assert "not stable on" in rep["error"] and "desired 3" in rep["error"]
    assert lock_free(clients)
    sinks.wait_for_mail(sandbox, lambda m: run_id in m["subject"] and "FAILED" in m["subject"])


# -- database ----------------------------------------------------------------------------------------


def db_conf(**overrides) -> dict:
    return {
        "environment": "staging",
        "snapshot_identifier": "latest",
        "switch_traffic": False,
        "reason": "INC-4243 migration 0042 dropped invoice rows",
        "confirm": N.db_instance_identifier,
        "wait_timeout_seconds": 60,
    } | overrides


@pytest.fixture
def pgbouncer_ini_restored(sandbox):
    ini = pgbouncer.folder(sandbox) / "pgbouncer.ini"
    original = ini.read_text()
    yield ini
    ini.write_text(original)


def test_database_rollback_restores_new_instance_and_switches_after_approval(
    af, sandbox, clients, pgbouncer_ini_restored
):
    rds = clients["rds"]
    original = rds.describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)["DBInstances"][0]
    run_id = af.trigger(DB, db_conf(switch_traffic=True))
    af.wait_for_task_state(DB, run_id, "approve_traffic_switch", ("awaiting_input",), timeout=300)
    body = af.hitl_details(DB, run_id, "approve_traffic_switch")["body"]
    assert "Data loss" in body and f"{N.db_instance_identifier}-rb-" in body
    answer(af, DB, run_id, "approve_traffic_switch", "Approve")
    assert af.wait_for_run(DB, run_id, timeout=300) == "success"

    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "success"
    target = values(rep, "Plan")["restore into"]
    restored = rds.describe_db_instances(DBInstanceIdentifier=target)["DBInstances"][0]
    assert restored["DBInstanceClass"] == original["DBInstanceClass"]
    assert restored["DBSubnetGroup"]["DBSubnetGroupName"] == original["DBSubnetGroup"]["DBSubnetGroupName"]
    after = rds.describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)["DBInstances"][0]
    assert (after["DBInstanceStatus"], after["Endpoint"]) == (
        original["DBInstanceStatus"],
        original["Endpoint"],
    )
    pre = values(rep, "Plan")["pre-rollback snapshot"]
    assert rds.describe_db_snapshots(DBSnapshotIdentifier=pre)["DBSnapshots"][0]["Status"] == "available"
    assert f"restored {target} by {run_id}" in pgbouncer_ini_restored.read_text()
    assert "application tables" in values(rep, "Restored database verified")["SQL"]
    assert lock_free(clients)


def test_database_rollback_refuses_snapshot_of_another_instance_without_change(af, sandbox, clients):
    snap = f"{N.db_replica_identifier}-e2e-{int(time.time())}"
    clients["rds"].create_db_snapshot(DBSnapshotIdentifier=snap, DBInstanceIdentifier=N.db_replica_identifier)
    before = world(sandbox, clients)
    run_id, state = run(af, DB, db_conf(snapshot_identifier=snap))
    assert state == "failed"
    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "refused" and f"belongs to instance '{N.db_replica_identifier}'" in rep["error"]
    assert world(sandbox, clients) == before
    assert lock_free(clients)


def test_restore_that_never_becomes_available_fails_with_report_and_lock_released(af, sandbox, clients):
    rds = clients["rds"]
    run_id = af.trigger(DB, db_conf(wait_timeout_seconds=30))
    target = f"{N.db_instance_identifier}-rb-{db_rollback.run_stamp(run_id)}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:  # stop it the moment it exists: it never reaches available
        if db_rollback.describe_instance(rds, target):
            rds.stop_db_instance(DBInstanceIdentifier=target)
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"{target} was never created")
    assert af.wait_for_run(DB, run_id, timeout=300) == "failed"
    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "failed"
    assert f"instance {target} is stopped after wait_timeout_seconds" in rep["error"]
    assert lock_free(clients)
    original = rds.describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)["DBInstances"][0]
    assert original["DBInstanceStatus"] == "available"


# -- infrastructure ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def infra_repo(sandbox, tmp_path_factory):
    return make_infra_repo(tmp_path_factory.mktemp("e2e-infra") / "ops", sandbox)


def standin_state(repo: dict) -> dict:
    return repo["state"]()  # staging's Terraform state in moto's S3


def infra_conf(repo, **overrides) -> dict:
    return {
        "environment": "staging",
        "git_ref": None,
        "terraform_dir": str(repo["infra"]),
        "reason": "INC-4244 reporting replica broke the network ACLs",
        "confirm": "staging",
    } | overrides


def test_infrastructure_rollback_rejected_at_approval_applies_nothing(af, sandbox, clients, infra_repo):
    state = standin_state(infra_repo)
    run_id = af.trigger(INFRA, infra_conf(infra_repo))
    af.wait_for_task_state(INFRA, run_id, "approve_plan", ("awaiting_input",), timeout=300)
    answer(af, INFRA, run_id, "approve_plan", "Reject")
    assert af.wait_for_run(INFRA, run_id, timeout=300) == "success"
    assert report(clients, INFRA, run_id)["outcome"] == "rejected"
    assert standin_state(infra_repo) == state
    assert lock_free(clients)


def test_infrastructure_rollback_applies_the_approved_plan_of_the_previous_commit(
    af, sandbox, clients, infra_repo
):
    run_id = af.trigger(INFRA, infra_conf(infra_repo))
    af.wait_for_task_state(INFRA, run_id, "approve_plan", ("awaiting_input",), timeout=300)
    body = af.hitl_details(INFRA, run_id, "approve_plan")["body"]
    assert body.index("terraform_data.db_reporting") < body.index("terraform_data.app_service")
    assert "Stateful resources destroyed or replaced" in body
    answer(af, INFRA, run_id, "approve_plan", "Approve")
    assert af.wait_for_run(INFRA, run_id, timeout=300) == "success"
    state = standin_state(infra_repo)
    addresses = {f"{r['type']}.{r['name']}" for r in state["resources"]}
    assert "terraform_data.db_reporting" not in addresses and "terraform_data.db_primary" in addresses
    rep = report(clients, INFRA, run_id)
    assert rep["outcome"] == "success"
    assert values(rep, "Plan request")["target commit"].startswith(infra_repo["baseline"])
    outputs = next(s for s in rep["sections"] if s["title"] == "Outputs and health")["tables"][0]["rows"]
    assert ["ecs_service_name", N.ecs_service_name] in outputs
    assert lock_free(clients)


def test_infrastructure_rollback_refuses_ref_without_terraform_directory(af, sandbox, clients, infra_repo):
    before = world(sandbox, clients)
    run_id, state = run(af, INFRA, infra_conf(infra_repo, git_ref=infra_repo["readme_only"]))
    assert state == "failed"
    rep = report(clients, INFRA, run_id)
    assert rep["outcome"] == "refused" and "has no Terraform configuration in infra" in json.dumps(rep)
    assert world(sandbox, clients) == before
