"""Application rollback logic against the sandbox's moto ECS (service on revision 2 of <prefix>-app)."""

from __future__ import annotations

import pytest

from bisman_ops.rollback import RollbackRefused
from bisman_ops.rollback import application as app
from bisman_sandbox import aws

N = aws.names()
SERVICE = N.ecs_service_name


def request(ecs, **overrides):
    args = {
        "environment": "staging",
        "cluster": None,
        "service": None,
        "task_definition": "previous",
        "confirm": SERVICE,
    } | overrides
    return app.plan_rollback(ecs, **args)


@pytest.fixture
def ecs(clients):
    return clients["ecs"]


@pytest.fixture
def on_revision_2(ecs):
    """The service runs revision 2 (as seeded) before and after the test."""

    # By ARN, as AWS reports it: moto keeps the very string update_service is given.
    arn = ecs.describe_task_definition(taskDefinition=f"{N.app_task_family}:2")["taskDefinition"][
        "taskDefinitionArn"
    ]

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


def test_previous_is_the_revision_before_current_with_image_difference_shown(ecs, on_revision_2, unchanged):
    plan = request(ecs)
    assert (plan.current.ref, plan.target.ref) == (f"{N.app_task_family}:2", f"{N.app_task_family}:1")
    assert "highest ACTIVE revision" in plan.resolved_by
    assert plan.image_rows() == [["app", "bisman-erp:sandbox-2", "bisman-erp:sandbox-1"]]
    assert not plan.no_change


def test_environment_difference_hides_secret_values():
    def view(env, secrets):
        return app.TaskDefinitionView("arn", "f", 1, "ACTIVE", {"app": "i"}, {"app": env}, {"app": secrets})

    rows = app.environment_diff(
        view({"LOG_LEVEL": "info", "API_TOKEN": "t1", "REDIS_URL": "redis://:pw@h"}, ["JWT_SECRET"]),
        view({"LOG_LEVEL": "debug", "API_TOKEN": "t2"}, ["JWT_SECRET", "NEW_KEY"]),
    )
    assert ["app", "LOG_LEVEL", "info", "debug"] in rows
    assert ["app", "API_TOKEN", "(hidden)", "(hidden)"] in rows
    assert ["app", "REDIS_URL", "(hidden)", "(absent)"] in rows
    assert ["app", "NEW_KEY (secret)", "(absent)", "(set)"] in rows
    assert not any("t1" in cell or "pw" in cell for row in rows for cell in row)


@pytest.mark.parametrize(
    ("confirm", "message"),
    [
        (None, "confirm is empty"),
        ("", "confirm is empty"),
        ("bisman-erp-staging-app", "does not match the service name 'bisman-erp-staging'"),
    ],
)
def test_missing_or_wrong_confirm_is_refused(ecs, on_revision_2, unchanged, confirm, message):
    with pytest.raises(RollbackRefused, match=message):
        request(ecs, confirm=confirm)


def test_unknown_environment_is_refused(ecs, unchanged):
    with pytest.raises(RollbackRefused, match="unknown environment 'production'"):
        request(ecs, environment="production")


def test_task_definition_of_another_family_is_refused(ecs, on_revision_2, unchanged):
    with pytest.raises(
        RollbackRefused, match=r"family 'bisman-erp-prod-app'.*runs family 'bisman-erp-staging-app'"
    ):
        request(ecs, task_definition="bisman-erp-prod-app:1")


def test_nonexistent_revision_is_refused(ecs, on_revision_2, unchanged):
    with pytest.raises(RollbackRefused, match=f"{N.app_task_family}:999 does not exist"):
        request(ecs, task_definition=f"{N.app_task_family}:999")


@pytest.fixture
def inactive_revision(ecs):
    """A registered, then deregistered (INACTIVE) revision of the app's family."""
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
    arn = ecs.register_task_definition(**{k: td[k] for k in keep if k in td})["taskDefinition"][
        "taskDefinitionArn"
    ]
    ecs.deregister_task_definition(taskDefinition=arn)
    return arn.rsplit("/", 1)[-1]


def test_inactive_revision_is_refused(ecs, on_revision_2, inactive_revision, unchanged):
    with pytest.raises(RollbackRefused, match=f"{inactive_revision} is INACTIVE, not ACTIVE"):
        request(ecs, task_definition=inactive_revision)


def test_service_already_on_target_is_no_change(ecs, on_revision_2, unchanged):
    plan = request(ecs, task_definition=f"{N.app_task_family}:2")
    assert plan.no_change


def test_rollback_updates_service_and_waiter_sees_our_deployment_stable(ecs, on_revision_2):
    plan = request(ecs)
    deployment = app.start_rollback(ecs, plan)
    progress = app.deployment_progress(ecs, plan.cluster, plan.service, plan.target.arn, deployment)
    assert progress.stable and not progress.failed, progress.detail
    checked = app.verify_running_tasks(ecs, plan.cluster, plan.service, plan.target.arn, tasks_listed=False)
    assert "running on the target" in checked["checked"]
    svc = app.describe_service(ecs, plan.cluster, plan.service)
    assert svc["taskDefinition"] == plan.target.arn


def test_waiter_is_not_stable_while_fewer_tasks_run_than_desired(ecs, on_revision_2):
    plan = request(ecs)
    deployment = app.start_rollback(ecs, plan)
    # moto keeps the deployment's running count (2) when desiredCount rises: a service that cannot place tasks
    ecs.update_service(cluster=plan.cluster, service=plan.service, desiredCount=3)
    progress = app.deployment_progress(ecs, plan.cluster, plan.service, plan.target.arn, deployment)
    assert not progress.stable and not progress.failed
    assert "desired 3" in progress.detail


def test_waiter_fails_fast_when_someone_else_moves_the_service(ecs, on_revision_2):
    plan = request(ecs)
    deployment = app.start_rollback(ecs, plan)
    ecs.update_service(cluster=plan.cluster, service=plan.service, taskDefinition=plan.current.arn)
    progress = app.deployment_progress(ecs, plan.cluster, plan.service, plan.target.arn, deployment)
    assert progress.failed and "someone else changed it" in progress.detail


def test_task_check_requires_listed_tasks_on_real_ecs(ecs, on_revision_2):
    plan = request(ecs, task_definition=f"{N.app_task_family}:2")
    with pytest.raises(Exception, match="0 task\\(s\\) of bisman-erp-staging run the target, 2 desired"):
        app.verify_running_tasks(ecs, plan.cluster, plan.service, plan.target.arn, tasks_listed=True)
