"""Application rollback logic against the sandbox's moto ECS (service on revision 2 of <prefix>-app)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from bisman_ops.change import step as step_module
from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollback import application as app
from bisman_ops.rollback import application_steps, resource_names
from bisman_ops.rollback.interfaces import EcsServiceTasks
from bisman_sandbox import aws
from bisman_sandbox.rollback_impl import SandboxServiceTasks

N = aws.names()
SERVICE = N.ecs_service_name
SECRET_VALUES = ("sandbox-db-password-not-secret", "s3cr3t-replica-url", "smtp-pass-value")
# The same names with other values in the target revision: "value changed", neither value shown.
TARGET_VALUES = ("target-db-password-not-secret", "postgresql://app:r3pl1ca@replica:5432/app",
                 "target-smtp-pass-value")


def request(ecs, **overrides):
    args = {
        "names": resource_names("staging", {}),
        "cluster": None,
        "service": None,
        "task_definition": "previous",
        "confirm": SERVICE,
    } | overrides
    return app.validate_request(ecs, **args)


@pytest.fixture
def ecs(clients):
    return clients["ecs"]


def _arn(ecs, ref: str) -> str:
    return ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]["taskDefinitionArn"]


@pytest.fixture
def on_revision_2(ecs):
    """The service runs revision 2 (as seeded) before and after the test."""
    arn = _arn(ecs, f"{N.app_task_family}:2")  # by ARN, as AWS reports it

    def put_back():
        ecs.update_service(
            cluster=N.ecs_cluster_name,
            service=SERVICE,
            taskDefinition=arn,
            desiredCount=aws.APP_DESIRED_COUNT,
        )

    put_back()
    yield
    put_back()


def register_with_values(ecs, values: tuple[str, str, str], log_level: str) -> str:
    """A new revision of the family (from revision 1) whose environment holds secret-looking values
    under names no name rule would catch; returns its ARN."""
    td = ecs.describe_task_definition(taskDefinition=f"{N.app_task_family}:1")["taskDefinition"]
    keep = (
        "family",
        "containerDefinitions",
        "networkMode",
        "requiresCompatibilities",
        "cpu",
        "memory",
        "executionRoleArn",
        "taskRoleArn",
    )
    body = {k: td[k] for k in keep if k in td}
    container = body["containerDefinitions"][0]
    container["environment"] = [
        *container["environment"],
        {"name": "DB_PASS", "value": values[0]},
        {"name": "DATABASE_URL_REPLICA", "value": values[1]},
        {"name": "SMTP_PASS", "value": values[2]},
        {"name": "LOG_LEVEL", "value": log_level},
    ]
    return ecs.register_task_definition(**body)["taskDefinition"]["taskDefinitionArn"]


@pytest.fixture
def revision_with_secret_values(ecs, on_revision_2):
    """The service on a revision whose environment carries literal DB_PASS, DATABASE_URL_REPLICA
    and SMTP_PASS values."""
    arn = register_with_values(ecs, SECRET_VALUES, "debug-current")
    ecs.update_service(cluster=N.ecs_cluster_name, service=SERVICE, taskDefinition=arn)
    yield arn
    ecs.deregister_task_definition(taskDefinition=arn)


@pytest.fixture
def target_with_other_values(ecs, revision_with_secret_values):
    """A target revision carrying the same names with other literal values; its family:revision."""
    arn = register_with_values(ecs, TARGET_VALUES, "debug-target")
    yield arn.rsplit("/", 1)[-1]
    ecs.deregister_task_definition(taskDefinition=arn)


def assert_no_value_in(text: str) -> None:
    for value in (*SECRET_VALUES, *TARGET_VALUES, "debug-current", "debug-target"):
        assert value not in text  # no value is shown, secret-looking or not


def test_previous_is_the_revision_before_current_with_image_difference_shown(ecs, on_revision_2, unchanged):
    plan = request(ecs)
    assert (plan.current.ref, plan.target.ref) == (f"{N.app_task_family}:2", f"{N.app_task_family}:1")
    assert "highest ACTIVE revision" in plan.resolved_by
    assert plan.image_rows() == [["app", "bisman-erp:sandbox-2", "bisman-erp:sandbox-1"]]
    assert not plan.no_change
    assert plan.bound_by == "by name"


def test_the_plan_carries_names_and_changes_never_values(ecs, revision_with_secret_values,
                                                         target_with_other_values):
    removed = request(ecs, task_definition=f"{N.app_task_family}:1")
    changed = request(ecs, task_definition=target_with_other_values)
    assert {
        ("DB_PASS", "removed"),
        ("DATABASE_URL_REPLICA", "removed"),
        ("SMTP_PASS", "removed"),
        ("LOG_LEVEL", "value changed"),
    } <= {(row[1], row[2]) for row in removed.env_changes}
    assert {
        ("DB_PASS", "value changed"),
        ("DATABASE_URL_REPLICA", "value changed"),
        ("SMTP_PASS", "value changed"),
        ("LOG_LEVEL", "value changed"),
    } <= {(row[1], row[2]) for row in changed.env_changes}
    for plan in (removed, changed):
        as_xcom = json.dumps(plan.to_dict())
        assert "DB_PASS" in as_xcom and "SMTP_PASS" in as_xcom  # the names are shown ...
        assert_no_value_in(as_xcom + repr(plan))  # ... no value is


def test_the_validate_step_shows_names_and_changes_never_values_in_xcom_report_or_log(
    ecs, target_with_other_values, monkeypatch, caplog
):
    """The task as it runs: its XCom value, what it records for the run report (tables, measured)
    and its log lines."""
    ti = SimpleNamespace(dag_id="bisman_rollback_application", run_id="manual__values",
                         task_id="validate_request", pushed={})
    ti.xcom_push = lambda key, value: ti.pushed.__setitem__(key, value)
    context = {"ti": ti, "params": {"environment": "staging", "cluster": None, "service": None,
                                    "task_definition": target_with_other_values, "confirm": SERVICE}}
    monkeypatch.setattr(step_module, "context", lambda: context)
    monkeypatch.setattr(application_steps, "context", lambda: context)
    monkeypatch.setattr(application_steps, "_ecs", lambda attempts=None: ecs)
    monkeypatch.setenv("BISMAN_PROJECT_NAME", N.project_name)

    # The task's log as Airflow keeps it (INFO); our own modules' lines down to DEBUG.
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="bisman_ops"):
        value = application_steps.validate_request.function()

    assert value["target"]["arn"].endswith(target_with_other_values)
    record = ti.pushed[step_module.RECORD_KEY]
    report_rows = record["sections"][0]["tables"][1]["rows"]
    assert ["app", "DB_PASS", "value changed"] in report_rows
    assert ["app", "DATABASE_URL_REPLICA", "value changed"] in report_rows
    assert caplog.text  # the step logged what it measured
    assert_no_value_in(json.dumps([value, record], default=str) + caplog.text)


@pytest.mark.parametrize("confirm", [None, "", "bisman-erp-staging-app"])
def test_missing_or_wrong_confirm_is_refused(ecs, on_revision_2, unchanged, confirm):
    with pytest.raises(CheckFailed, match="confirm: seen") as err:
        request(ecs, confirm=confirm)
    assert "'bisman-erp-staging'" in err.value.expected


def test_a_service_of_another_environment_is_refused_before_the_lock(ecs, on_revision_2, unchanged):
    prod = aws.names("prod")
    with pytest.raises(CheckFailed, match=f"ECS cluster {prod.ecs_cluster_name} belongs to staging"):
        request(
            ecs, cluster=prod.ecs_cluster_name, service=prod.ecs_service_name, confirm=prod.ecs_service_name
        )


def test_task_definition_of_another_family_is_refused(ecs, on_revision_2, unchanged):
    with pytest.raises(CheckFailed, match="of family 'bisman-erp-prod-app'"):
        request(ecs, task_definition="bisman-erp-prod-app:1")


def test_nonexistent_revision_is_refused(ecs, on_revision_2, unchanged):
    with pytest.raises(CheckFailed, match=f"{N.app_task_family}:999 does not exist"):
        request(ecs, task_definition=f"{N.app_task_family}:999")


def test_service_already_on_target_is_no_change(ecs, on_revision_2, unchanged):
    assert request(ecs, task_definition=f"{N.app_task_family}:2").no_change


def test_previous_after_a_rollback_skips_the_release_rolled_back_from():
    r = {n: f"arn:aws:ecs:us-east-1:1:task-definition/app:{n}" for n in (3, 4, 5)}
    # Deployed 3, 4, 5 (bad), rolled back to 4: history newest first is 4, 5, 4, 3.
    assert app.previous_from_history([r[4], r[5], r[4], r[3]], r[4]) == (r[3], r[5])
    # Plain forward history: previous is the one before.
    assert app.previous_from_history([r[5], r[4], r[3]], r[5]) == (r[4], None)
    # Nothing else to go back to: refuse rather than return to the bad release.
    assert app.previous_from_history([r[4], r[5]], r[4]) == (None, r[5])


def test_previous_is_resolved_from_ecs_deployment_history_newest_first():
    """ListServiceDeployments, DescribeServiceDeployments and DescribeServiceRevisions (moto has none
    of them: botocore's Stubber answers with ECS's documented shapes)."""
    import boto3
    from botocore.stub import Stubber

    ecs = boto3.client("ecs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    td = {n: f"arn:aws:ecs:us-east-1:1:task-definition/app:{n}" for n in (3, 4, 5)}
    # Deployed 3, 4, 5 (bad), rolled back to 4; listed in no particular order.
    deployed = [("d3", "r3", 3, 1), ("d5", "r5", 5, 3), ("d4", "r4", 4, 2), ("d4b", "r4b", 4, 4)]
    stub = Stubber(ecs)
    stub.add_response("list_service_deployments", {"serviceDeployments": [
        {"serviceDeploymentArn": d} for d, *_ in deployed]},
        {"cluster": "c", "service": "s", "status": ["SUCCESSFUL"]})
    stub.add_response("describe_service_deployments", {"serviceDeployments": [
        {"serviceDeploymentArn": d, "createdAt": datetime(2026, 1, at, tzinfo=UTC),
         "targetServiceRevision": {"arn": r}} for d, r, _, at in deployed]},
        {"serviceDeploymentArns": [d for d, *_ in deployed]})
    stub.add_response("describe_service_revisions", {"serviceRevisions": [
        {"serviceRevisionArn": r, "taskDefinition": td[n]} for _, r, n, _ in deployed]},
        {"serviceRevisionArns": ["r4b", "r5", "r4", "r3"]})
    with stub:
        history = app.deployment_history(ecs, "c", "s")
    assert history == [td[4], td[5], td[4], td[3]]
    assert app.previous_from_history(history, td[4]) == (td[3], td[5])

    # The API refused (as on an emulator): no history, the revision list decides.
    stub = Stubber(ecs)
    stub.add_client_error("list_service_deployments", "UnsupportedOperation", http_status_code=400)
    with stub:
        assert app.deployment_history(ecs, "c", "s") == []
    # A malformed answer is a bug to see, not a reason to guess.
    stub = Stubber(ecs)
    stub.add_response("list_service_deployments", {"serviceDeployments": [{"serviceDeploymentArn": "d"}]})
    stub.add_response("describe_service_deployments", {"serviceDeployments": [
        {"serviceDeploymentArn": "d", "targetServiceRevision": {"arn": "r"}}]})
    stub.add_response("describe_service_revisions", {"serviceRevisions": [{"taskDefinition": td[3]}]})
    with stub, pytest.raises(KeyError, match="serviceRevisionArn"):
        app.deployment_history(ecs, "c", "s")


def test_update_is_idempotent_and_the_sensor_sees_our_deployment_stable(ecs, on_revision_2):
    plan = request(ecs)
    first = app.start_rollback(ecs, plan)
    assert first["deployed"]
    again = app.start_rollback(ecs, plan)  # a retry of the task: no second deployment
    assert again == {"deployment_id": first["deployment_id"], "deployed": False}
    poke = app.deployment_poke(ecs, plan.cluster, plan.service, plan.target.arn, first["deployment_id"])
    assert poke.done, poke.waiting_for
    checked = app.verify_running_tasks(
        ecs, SandboxServiceTasks(), plan.cluster, plan.service, plan.target.arn
    )
    assert checked == {"desired": aws.APP_DESIRED_COUNT, "running on target": aws.APP_DESIRED_COUNT}


def test_sensor_waits_while_fewer_tasks_run_than_desired(ecs, on_revision_2):
    plan = request(ecs)
    deployment = app.start_rollback(ecs, plan)["deployment_id"]
    # moto keeps the deployment's running count (2) when desiredCount rises: tasks that cannot be placed
    ecs.update_service(cluster=plan.cluster, service=plan.service, desiredCount=3)
    poke = app.deployment_poke(ecs, plan.cluster, plan.service, plan.target.arn, deployment)
    assert not poke.done and "running the 3 desired" in poke.waiting_for


def test_sensor_fails_at_once_when_someone_else_moves_the_service(ecs, on_revision_2):
    plan = request(ecs)
    deployment = app.start_rollback(ecs, plan)["deployment_id"]
    ecs.update_service(cluster=plan.cluster, service=plan.service, taskDefinition=plan.current.arn)
    with pytest.raises(CheckFailed, match="someone else changed it"):
        app.deployment_poke(ecs, plan.cluster, plan.service, plan.target.arn, deployment)


def test_the_aws_task_listing_finds_no_tasks_on_moto_and_the_check_fails(ecs, on_revision_2):
    plan = request(ecs, task_definition=f"{N.app_task_family}:2")
    with pytest.raises(CheckFailed, match=r"running tasks of bisman-erp-staging: seen 0 on .*; expected 2"):
        app.verify_running_tasks(ecs, EcsServiceTasks(), plan.cluster, plan.service, plan.target.arn)
