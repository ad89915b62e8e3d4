"""The three rollback DAGs end to end: triggered through Airflow's REST API with the form's conf, as
from the UI, against the sandbox (moto for AWS, real PostgreSQL/PgBouncer/app, a real PostgreSQL for
a restored instance, real Terraform); approvals answered through the REST API."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from bisman_ops.change import lock as change_lock
from bisman_ops.change.report import RunReport, report_keys
from bisman_ops.rollback import database as db_rollback
from bisman_sandbox import aws, pgbouncer, postgres, sinks
from bisman_sandbox.rollback_impl import SandboxPgBouncerConfig
from tests.e2e import restores
from tests.e2e.approvals import answer
from tests.e2e.leftovers import fail_left_over_runs
from tests.rollback.conftest import make_infra_repo, world

APP = "bisman_rollback_application"
DB = "bisman_rollback_database"
INFRA = "bisman_rollback_infrastructure"
N = aws.names()
PROD = aws.names("prod")
REASON = "INC-4242 release 2 returns 500s on checkout"
# A run is a dozen tasks of a few seconds each; on a loaded 2-core machine each waits its turn.
RUN_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def af(sandbox, airflow):
    """Airflow (its sandbox settings come from the launcher), no run of an earlier session in the way."""
    for dag_id in (APP, DB, INFRA):
        airflow.wait_for_dag(dag_id)
        airflow.unpause(dag_id)
        fail_left_over_runs(airflow, sandbox, dag_id)
    return airflow


@pytest.fixture(scope="module")
def clients(sandbox):
    return {s: aws.client(sandbox, s) for s in ("ecs", "rds", "dynamodb", "s3", "secretsmanager")}


def report(clients, dag_id: str, run_id: str, names=N) -> dict:
    json_key, _ = report_keys(names.reports_prefix, RunReport("", dag_id, run_id))
    body = clients["s3"].get_object(Bucket=names.state_bucket, Key=json_key)["Body"].read()
    return json.loads(body)


def values(rep: dict, title: str) -> dict:
    return next(s["values"] for s in rep["sections"] if s["title"] == title)


def measured(rep: dict, task_id: str):
    table = next(s for s in rep["sections"] if s["title"] == "Checks and gate measurements")["tables"][0]
    return next(row[2] for row in table["rows"] if row[0] == task_id)


def lock_free(clients, names=N) -> bool:
    return change_lock.current(clients["dynamodb"], names.lock_table, names.environment) is None


def service_td(clients) -> str:
    svc = clients["ecs"].describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])[
        "services"
    ][0]
    return svc["taskDefinition"].rsplit("/", 1)[-1]


def run(af, dag_id: str, conf: dict, timeout: float = RUN_TIMEOUT_S) -> tuple[str, str]:
    run_id = af.trigger(dag_id, conf)
    return run_id, af.wait_for_run(dag_id, run_id, timeout=timeout)


def mails_of(sandbox, run_id: str) -> list[str]:
    return [m["subject"] for m in sinks.captured_mail(sandbox) if run_id in m["subject"] + m.get("text", "")]


def refused_notice(sandbox, run_id: str) -> str:
    """The one notice of a refused request: a REFUSED line in Slack, no mail (nothing changed, so
    no one is paged), nothing marked FAILED."""
    found = json.dumps(sinks.wait_for_slack(sandbox, lambda p: run_id in json.dumps(p)))
    assert "REFUSED" in found and "FAILED" not in found
    sent = [p for p in sinks.captured_slack(sandbox) if run_id in json.dumps(p)]
    assert len(sent) == 1, sent
    assert mails_of(sandbox, run_id) == []
    return found


def mail(sandbox, run_id: str, kind: str) -> dict:
    """The notification of ``kind`` (STARTED, SUCCEEDED, FAILED) about this run."""
    return sinks.wait_for_mail(sandbox, lambda m: run_id in m["subject"] + m["text"] and kind in m["subject"])


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
    plan = measured(rep, "validate_request")
    assert (plan["current"], plan["target"]) == (f"{N.app_task_family}:2", f"{N.app_task_family}:1")
    assert measured(rep, "tasks_on_target")["running on target"] == aws.APP_DESIRED_COUNT
    assert lock_free(clients)
    for kind in ("STARTED", "SUCCEEDED"):
        assert REASON in mail(sandbox, run_id, kind)["text"]
    # Nothing of a task definition's environment reaches the report, only names.
    assert aws.sandbox_app_secret(sandbox)["DB_PASSWORD"] not in json.dumps(rep)


def test_application_rollback_already_on_target_changes_nothing_and_says_so(
    af, clients, service_on_revision_2
):
    before = clients["ecs"].describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])[
        "services"
    ][0]["deployments"]
    run_id, state = run(af, APP, app_conf(task_definition=f"{N.app_task_family}:2"))
    assert state == "success"
    assert report(clients, APP, run_id)["outcome"] == "no_change"
    after = clients["ecs"].describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])[
        "services"
    ][0]["deployments"]
    assert [d["id"] for d in after] == [d["id"] for d in before]


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"confirm": "yes"}, "confirm: seen 'yes'"),
        ({"task_definition": "bisman-erp-prod-app:1"}, "of family 'bisman-erp-prod-app'"),
        (
            {"cluster": PROD.ecs_cluster_name, "service": PROD.ecs_service_name,
             "confirm": PROD.ecs_service_name},
            f"ECS cluster {PROD.ecs_cluster_name} belongs to staging",
        ),
    ],
)
def test_a_bad_request_is_refused_before_the_lock_and_pages_nobody(
    af, sandbox, clients, service_on_revision_2, conf, message
):
    before = world(sandbox, clients)
    run_id, state = run(af, APP, app_conf(**conf))
    assert state == "failed"
    rep = report(clients, APP, run_id)
    assert rep["outcome"] == "refused" and message in rep["summary"]
    states = {t["task_id"]: t["state"] for t in af.task_instances(APP, run_id)}
    assert states["acquire_change_lock"] == "upstream_failed"
    assert states["notify_team_of_start"] == "upstream_failed"
    assert world(sandbox, clients) == before
    assert message in refused_notice(sandbox, run_id)


def test_rollback_is_refused_while_a_rollout_holds_the_lock(af, sandbox, clients, service_on_revision_2):
    ddb = clients["dynamodb"]
    change_lock.acquire(ddb, N.lock_table, "staging", "bisman_rollout/manual__rehearsal", lease_seconds=600)
    try:
        before = world(sandbox, clients)
        run_id, state = run(af, APP, app_conf())
        assert state == "failed"
        rep = report(clients, APP, run_id)
        assert rep["outcome"] == "refused"
        assert "held by bisman_rollout/manual__rehearsal" in rep["summary"]
        assert world(sandbox, clients) == before
        assert change_lock.current(ddb, N.lock_table, "staging").owner == "bisman_rollout/manual__rehearsal"
    finally:
        change_lock.release(ddb, N.lock_table, "staging", "bisman_rollout/manual__rehearsal")


def test_a_missing_lock_table_is_named_and_the_report_and_notification_still_go_out(
    af, sandbox, clients
):
    ddb = clients["dynamodb"]
    ddb.delete_table(TableName=PROD.lock_table)
    try:
        run_id, state = run(af, APP, app_conf(environment="prod", confirm=PROD.ecs_service_name))
        assert state == "failed"
        rep = report(clients, APP, run_id, names=PROD)
        assert rep["outcome"] == "refused"
        assert f"change lock table {PROD.lock_table}: seen does not exist" in rep["summary"]
        assert PROD.lock_table in refused_notice(sandbox, run_id)
    finally:
        aws.seed(sandbox, "prod")  # the table again, as seeded


def test_service_that_never_stabilises_fails_with_report_and_lock_released(
    af, sandbox, clients, service_on_revision_2
):
    # Three desired, two placed: moto's deployment never reaches the count, like a service out of capacity.
    clients["ecs"].update_service(cluster=N.ecs_cluster_name, service=N.ecs_service_name, desiredCount=3)
    run_id, state = run(af, APP, app_conf(wait_timeout_seconds=30))
    assert state == "failed"
    rep = report(clients, APP, run_id)
    assert rep["outcome"] == "failed" and "service_stable timed out" in rep["summary"]
    assert lock_free(clients)
    mail(sandbox, run_id, "FAILED")


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
def pgbouncer_back_on_the_primary(sandbox):
    """PgBouncer points at the primary again after the test; restored servers are stopped."""
    cfg = SandboxPgBouncerConfig(sandbox)
    before = cfg.read()
    yield cfg
    cfg.write(before)
    with psycopg.connect(pgbouncer.dsn(sandbox, "admin"), autocommit=True, prepare_threshold=None) as admin:
        admin.execute("RELOAD")
        admin.execute(f"RECONNECT {pgbouncer.RW_DB}")
        admin.execute(f"RECONNECT {pgbouncer.RO_DB}")
    for name in postgres.restored_names(sandbox):
        postgres.stop_restored(sandbox, name, remove=True)


def app_pool_server_port(sandbox) -> int:
    with psycopg.connect(pgbouncer.dsn(sandbox, "rw"), autocommit=True, prepare_threshold=None) as conn:
        return conn.execute("SELECT inet_server_port()").fetchone()[0]


def test_database_rollback_switches_pgbouncer_to_the_restored_instance_after_approval(
    af, sandbox, clients, pgbouncer_back_on_the_primary
):
    rds = clients["rds"]
    original = rds.describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)["DBInstances"][0]
    run_id = af.trigger(DB, db_conf(switch_traffic=True))
    # The switch's process is killed while PgBouncer's pool is paused (issue 23 point 1).
    restores.arm(sandbox, DB, run_id, ["switch_traffic"], at="paused")
    af.wait_for_task_state(DB, run_id, "approve_traffic_switch", ("awaiting_input",), timeout=RUN_TIMEOUT_S)
    body = af.hitl_details(DB, run_id, "approve_traffic_switch")["body"]
    assert "Data loss" in body and f"{N.db_instance_identifier}-rb-" in body
    answer(af, DB, run_id, "approve_traffic_switch", "Approve")
    killed = restores.ended(af, DB, run_id, "switch_traffic", RUN_TIMEOUT_S)
    assert (killed["try_number"], killed["state"]) == (1, "failed")
    # Its teardown RESUMEd the pool: nothing paused, the application's queries answered (on the
    # original: the kill came before the switch was written).
    assert restores.ended(af, DB, run_id, "pgbouncer_resumed", RUN_TIMEOUT_S)["state"] == "success"
    back = restores.pool_not_paused(sandbox, {})
    assert back == {"pgbouncer pools paused": [], "query through the pool": True}
    assert app_pool_server_port(sandbox) == sandbox.port("postgres_primary")
    # The run ends failed; the operator then clears the switch (with its downstream tasks): the
    # approved switch is made.
    assert af.wait_for_run(DB, run_id, timeout=RUN_TIMEOUT_S) == "failed"
    af.clear(DB, run_id, ["switch_traffic"])
    assert af.wait_for_run(DB, run_id, timeout=RUN_TIMEOUT_S) == "success"

    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "success"
    target = measured(rep, "validate_request")["restore into"]
    port = postgres.restored_port(sandbox, target)
    # PgBouncer serves the restored instance: SHOW DATABASES and a query through its pool say so;
    # the read-only pool followed it (issue 23 point 2).
    assert measured(rep, "traffic_on_restored_instance") == {
        "SHOW DATABASES": f"127.0.0.1:{port}", "query answered by": f"127.0.0.1:{port}",
        "read-only pools answered by": {pgbouncer.RO_DB: f"127.0.0.1:{port}"}}
    assert app_pool_server_port(sandbox) == port != sandbox.port("postgres_primary")
    restored = rds.describe_db_instances(DBInstanceIdentifier=target)["DBInstances"][0]
    assert restored["DBInstanceClass"] == original["DBInstanceClass"]
    after = rds.describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)["DBInstances"][0]
    assert after["Endpoint"] == original["Endpoint"]
    assert after["DBInstanceStatus"] == original["DBInstanceStatus"]
    answers = next(s for s in rep["sections"] if s["title"] == "Approvals")["tables"][0]["rows"]
    assert answers[0][2] == "Approve" and answers[0][3] not in ("?", "")
    assert lock_free(clients)


def test_database_rollback_rejected_leaves_pgbouncer_on_the_primary(
    af, sandbox, clients, pgbouncer_back_on_the_primary
):
    run_id = af.trigger(DB, db_conf(switch_traffic=True))
    af.wait_for_task_state(DB, run_id, "approve_traffic_switch", ("awaiting_input",), timeout=RUN_TIMEOUT_S)
    answer(af, DB, run_id, "approve_traffic_switch", "Reject")
    assert af.wait_for_run(DB, run_id, timeout=RUN_TIMEOUT_S) == "failed"
    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "rejected"
    assert app_pool_server_port(sandbox) == sandbox.port("postgres_primary")
    assert lock_free(clients)


def test_a_switch_after_the_lock_was_lost_during_the_approval_changes_nothing(
    af, sandbox, clients, pgbouncer_back_on_the_primary
):
    ddb = clients["dynamodb"]
    run_id = af.trigger(DB, db_conf(switch_traffic=True))
    af.wait_for_task_state(DB, run_id, "approve_traffic_switch", ("awaiting_input",), timeout=RUN_TIMEOUT_S)
    # The lease ran out while nobody answered and another change took the environment.
    change_lock.release(ddb, N.lock_table, "staging", change_lock.owner_for(DB, run_id))
    change_lock.acquire(ddb, N.lock_table, "staging", "bisman_rollout/manual__other", lease_seconds=600)
    try:
        answer(af, DB, run_id, "approve_traffic_switch", "Approve")
        assert af.wait_for_run(DB, run_id, timeout=RUN_TIMEOUT_S) == "failed"
        states = {t["task_id"]: t["state"] for t in af.task_instances(DB, run_id)}
        assert states["switch_traffic"] in ("upstream_failed", "failed")
        assert app_pool_server_port(sandbox) == sandbox.port("postgres_primary")
        assert change_lock.current(ddb, N.lock_table, "staging").owner == "bisman_rollout/manual__other"
    finally:
        change_lock.release(ddb, N.lock_table, "staging", "bisman_rollout/manual__other")


def test_database_rollback_refuses_snapshot_of_another_instance_without_change(af, sandbox, clients):
    snap = f"{N.db_replica_identifier}-e2e-{int(time.time())}"
    clients["rds"].create_db_snapshot(DBSnapshotIdentifier=snap, DBInstanceIdentifier=N.db_replica_identifier)
    before = world(sandbox, clients)
    run_id, state = run(af, DB, db_conf(snapshot_identifier=snap))
    assert state == "failed"
    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "refused" and f"belongs to '{N.db_replica_identifier}'" in rep["summary"]
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
    assert af.wait_for_run(DB, run_id, timeout=RUN_TIMEOUT_S) == "failed"
    rep = report(clients, DB, run_id)
    assert rep["outcome"] == "failed" and "restored_instance_available timed out" in rep["summary"]
    assert lock_free(clients)
    original = rds.describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)["DBInstances"][0]
    assert original["DBInstanceStatus"] == "available"


# -- infrastructure ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def infra_repo(sandbox, tmp_path_factory):
    return make_infra_repo(tmp_path_factory.mktemp("e2e-infra") / "ops", sandbox)


def backend_state(repo: dict) -> dict:
    """Staging's Terraform state in moto's S3; its absence fails (no comparison of two Nones)."""
    state = repo["state"]()
    assert state, "no Terraform state for staging in moto's S3"
    return state


def infra_conf(repo, **overrides) -> dict:
    return {
        "environment": "staging",
        "git_ref": None,
        "terraform_dir": str(repo["infra"]),
        "reason": "INC-4244 reporting replica broke the network ACLs",
        "confirm": "staging",
    } | overrides


def test_infrastructure_rollback_rejected_at_approval_applies_nothing(af, sandbox, clients, infra_repo):
    state = backend_state(infra_repo)
    run_id = af.trigger(INFRA, infra_conf(infra_repo))
    af.wait_for_task_state(INFRA, run_id, "approve_plan", ("awaiting_input",), timeout=300)
    answer(af, INFRA, run_id, "approve_plan", "Reject")
    assert af.wait_for_run(INFRA, run_id, timeout=300) == "failed"  # a Reject fails the approval task
    states = {t["task_id"]: t["state"] for t in af.task_instances(INFRA, run_id)}
    assert states["apply_approved_plan"] == "upstream_failed" and states["release_change_lock"] == "success"
    assert report(clients, INFRA, run_id)["outcome"] == "rejected"
    assert backend_state(infra_repo) == state
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
    state = backend_state(infra_repo)
    addresses = {f"{r['type']}.{r['name']}" for r in state["resources"]}
    assert "terraform_data.db_reporting" not in addresses and "terraform_data.db_primary" in addresses
    rep = report(clients, INFRA, run_id)
    assert rep["outcome"] == "success"
    assert values(rep, "Plan request")["target commit"].startswith(infra_repo["baseline"])
    outputs = next(s for s in rep["sections"] if s["title"] == "Outputs")["tables"][0]["rows"]
    assert ["ecs_service_name", N.ecs_service_name] in outputs
    assert lock_free(clients)


def test_a_terraform_state_locked_elsewhere_fails_the_plan_with_its_lock_id_and_the_lock_is_given_back(
    af, sandbox, clients, infra_repo
):
    """Another Terraform holds staging's state lock (a DynamoDB item as Terraform writes it): the
    plan fails with Terraform's message and that lock's id, nothing is applied, and the change lock
    is released by its teardown."""
    state = backend_state(infra_repo)
    lock_path = f"{N.state_bucket}/{N.project_name}/{N.environment}/terraform.tfstate"
    info = {"ID": "5f1c0d2e-7a7b-4c1e-9d3a-0c6b1e2f3a4b", "Operation": "OperationTypeApply", "Info": "",
            "Who": "someone@elsewhere", "Version": "1.15.5", "Created": "2026-12-02T09:00:00Z",
            "Path": lock_path}
    ddb = clients["dynamodb"]
    ddb.put_item(TableName=N.lock_table, Item={"LockID": {"S": lock_path}, "Info": {"S": json.dumps(info)}})
    try:
        run_id, outcome = run(af, INFRA, infra_conf(infra_repo))
    finally:
        ddb.delete_item(TableName=N.lock_table, Key={"LockID": {"S": lock_path}})
    assert outcome == "failed"
    states = {t["task_id"]: t["state"] for t in af.task_instances(INFRA, run_id)}
    assert states["checkout_and_plan"] == "failed" and states["apply_approved_plan"] == "upstream_failed"
    assert states["release_change_lock"] == "success" and lock_free(clients)
    shown = json.dumps(report(clients, INFRA, run_id))
    assert "Error acquiring the state lock" in shown and info["ID"] in shown
    assert backend_state(infra_repo) == state


def test_infrastructure_rollback_refuses_ref_without_terraform_directory(af, sandbox, clients, infra_repo):
    before = world(sandbox, clients)
    run_id, state = run(af, INFRA, infra_conf(infra_repo, git_ref=infra_repo["readme_only"]))
    assert state == "failed"
    rep = report(clients, INFRA, run_id)
    assert rep["outcome"] == "refused" and "has no Terraform configuration in infra" in json.dumps(rep)
    assert world(sandbox, clients) == before
