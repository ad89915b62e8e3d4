"""Application rollback: point the ECS service back at an earlier task definition.

``plan_rollback`` checks the request and resolves the target (nothing changes); ``start_rollback``
updates the service; ``deployment_progress`` is the waiter's single look; ``verify_running_tasks``
checks what the service runs afterwards.

The waiter follows our deployment by id: ``update_service`` answers with the new PRIMARY
deployment (on AWS a new one; we also force one, so the id changes even where the emulator keeps
the old record). The service is stable when that deployment is the only one, its rollout is
COMPLETED (when the circuit breaker reports it) and it runs the desired count. A FAILED rollout, or
our deployment disappearing (the circuit breaker rolled back), ends the wait at once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bisman_ops.clients.aws import error_code
from bisman_ops.rollback import RollbackFailed, RollbackRefused, check_confirm, resource_names

# "false" where ECS lists no tasks for a service (moto): verification then reads the service's counts.
TASKS_LISTED_ENV = "BISMAN_ECS_TASKS_LISTED"
TASK_DEFINITION_REF = re.compile(r"^(?P<family>[A-Za-z0-9_-]{1,255}):(?P<revision>[0-9]{1,9})$")
# Environment variables whose values the plan never shows, even though they are plain environment.
_SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|token|api_?key|private_?key|credential|dsn|_url$)")


@dataclass(frozen=True)
class TaskDefinitionView:
    arn: str
    family: str
    revision: int
    status: str
    images: dict[str, str]  # container -> image
    environment: dict[str, dict[str, str]]  # container -> name -> value
    secrets: dict[str, list[str]]  # container -> names of secrets (values live in Secrets Manager)

    @property
    def ref(self) -> str:
        return f"{self.family}:{self.revision}"

    @classmethod
    def from_api(cls, td: dict) -> TaskDefinitionView:
        containers = td.get("containerDefinitions", [])
        return cls(
            arn=td["taskDefinitionArn"],
            family=td["family"],
            revision=int(td["revision"]),
            status=td.get("status", "ACTIVE"),
            images={c["name"]: c.get("image", "") for c in containers},
            environment={
                c["name"]: {e["name"]: e.get("value", "") for e in c.get("environment", [])}
                for c in containers
            },
            secrets={c["name"]: sorted(s["name"] for s in c.get("secrets", [])) for c in containers},
        )


def describe_task_definition(ecs: Any, ref: str) -> TaskDefinitionView | None:
    """The task definition ``ref`` (family:revision or ARN), or None if ECS does not know it."""
    try:
        return TaskDefinitionView.from_api(ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"])
    except Exception as exc:
        if error_code(exc) in ("ClientException", "InvalidParameterException", "ResourceNotFoundException"):
            return None
        raise


def describe_service(ecs: Any, cluster: str, service: str) -> dict | None:
    try:
        found = ecs.describe_services(cluster=cluster, services=[service])["services"]
    except Exception as exc:
        if error_code(exc) == "ClusterNotFoundException":
            return None
        raise
    return next((s for s in found if s.get("status") == "ACTIVE"), None)


def service_task_definition_arn(ecs: Any, svc: dict) -> str:
    """The service's task definition as an ARN (moto keeps whatever string update_service got)."""
    ref = svc.get("taskDefinition", "")
    if ref.startswith("arn:"):
        return ref
    td = describe_task_definition(ecs, ref)
    return td.arn if td else ref


def _hide(name: str, value: str) -> str:
    return "(hidden)" if _SECRET_NAME.search(name) else value


def environment_diff(current: TaskDefinitionView, target: TaskDefinitionView) -> list[list[str]]:
    """Rows [container, variable, current, target] for every difference; secret-looking values
    hidden, and secrets (from Secrets Manager) compared by name only."""
    rows: list[list[str]] = []
    for container in sorted(set(current.environment) | set(target.environment)):
        cur = current.environment.get(container, {})
        tgt = target.environment.get(container, {})
        for name in sorted(set(cur) | set(tgt)):
            if cur.get(name) != tgt.get(name):
                rows.append(
                    [
                        container,
                        name,
                        _hide(name, cur[name]) if name in cur else "(absent)",
                        _hide(name, tgt[name]) if name in tgt else "(absent)",
                    ]
                )
        cur_s = set(current.secrets.get(container, []))
        tgt_s = set(target.secrets.get(container, []))
        for name in sorted(cur_s ^ tgt_s):
            rows.append(
                [
                    container,
                    f"{name} (secret)",
                    "(set)" if name in cur_s else "(absent)",
                    "(set)" if name in tgt_s else "(absent)",
                ]
            )
    return rows


@dataclass
class ApplicationRollbackPlan:
    environment: str
    cluster: str
    service: str
    desired_count: int
    current: TaskDefinitionView
    target: TaskDefinitionView
    resolved_by: str  # how the target was found
    env_diff: list[list[str]] = field(default_factory=list)

    @property
    def no_change(self) -> bool:
        return self.current.arn == self.target.arn

    def image_rows(self) -> list[list[str]]:
        containers = sorted(set(self.current.images) | set(self.target.images))
        return [
            [c, self.current.images.get(c, "(absent)"), self.target.images.get(c, "(absent)")]
            for c in containers
        ]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ApplicationRollbackPlan:
        return cls(
            **{
                **d,
                "current": TaskDefinitionView(**d["current"]),
                "target": TaskDefinitionView(**d["target"]),
            }
        )


def previous_from_deployments(ecs: Any, cluster: str, service: str, current_arn: str) -> str | None:
    """The task definition of the last successful deployment before the current one, from ECS's
    service deployment history (ListServiceDeployments). None when the history is unavailable
    (older API, emulator) or has no earlier deployment."""
    try:
        listed = ecs.list_service_deployments(cluster=cluster, service=service, status=["SUCCESSFUL"])
        arns = [d["serviceDeploymentArn"] for d in listed.get("serviceDeployments", [])]
        if not arns:
            return None
        deployments = ecs.describe_service_deployments(serviceDeploymentArns=arns[:20])["serviceDeployments"]
        revision_arns = [
            d["targetServiceRevision"]["arn"]
            for d in sorted(deployments, key=lambda d: d.get("createdAt") or 0, reverse=True)
            if d.get("targetServiceRevision")
        ]
        if not revision_arns:
            return None
        revisions = ecs.describe_service_revisions(serviceRevisionArns=revision_arns)["serviceRevisions"]
        by_arn = {r["serviceRevisionArn"]: r["taskDefinition"] for r in revisions}
    except Exception:  # history is a refinement; the revision list below is always there
        return None
    for arn in revision_arns:
        task_definition = by_arn.get(arn)
        if task_definition and task_definition != current_arn:
            return task_definition
    return None


def previous_revision(ecs: Any, current: TaskDefinitionView) -> TaskDefinitionView | None:
    """The highest ACTIVE revision of the current family below the current revision."""
    paginator = ecs.get_paginator("list_task_definitions")
    candidates = []
    for page in paginator.paginate(familyPrefix=current.family, status="ACTIVE", sort="DESC"):
        for arn in page["taskDefinitionArns"]:
            family, _, revision = arn.rsplit("/", 1)[-1].rpartition(":")
            if family == current.family and int(revision) < current.revision:
                candidates.append(int(revision))
    if not candidates:
        return None
    return describe_task_definition(ecs, f"{current.family}:{max(candidates)}")


def plan_rollback(
    ecs: Any,
    *,
    environment: str,
    cluster: str | None,
    service: str | None,
    task_definition: str,
    confirm: str | None,
) -> ApplicationRollbackPlan:
    """Check the request and resolve the target. Raises RollbackRefused; changes nothing."""
    names = resource_names(environment)
    cluster = cluster or names.ecs_cluster_name
    service = service or names.ecs_service_name
    check_confirm(confirm, service, "the service name")
    svc = describe_service(ecs, cluster, service)
    if svc is None:
        raise RollbackRefused(
            f"ECS service {service!r} not found (or not ACTIVE) in cluster {cluster!r}; "
            "check the environment, cluster and service. Nothing was changed."
        )
    current = describe_task_definition(ecs, svc["taskDefinition"])
    if current is None:
        raise RollbackRefused(
            f"the service's current task definition {svc['taskDefinition']} cannot be "
            "described; nothing was changed."
        )

    if task_definition == "previous":
        target = None
        from_history = previous_from_deployments(ecs, cluster, service, current.arn)
        if from_history:
            target = describe_task_definition(ecs, from_history)
            resolved_by = "the service's deployment history (last successful deployment before this one)"
        if target is None:
            target = previous_revision(ecs, current)
            resolved_by = f"the highest ACTIVE revision of {current.family} below {current.revision}"
        if target is None:
            raise RollbackRefused(
                f"no ACTIVE revision of {current.family} before {current.ref} to roll back "
                "to; name one as family:revision. Nothing was changed."
            )
    else:
        match = TASK_DEFINITION_REF.match(task_definition or "")
        if not match:
            raise RollbackRefused(
                f"task_definition {task_definition!r} is neither 'previous' nor "
                "family:revision. Nothing was changed."
            )
        if match["family"] != current.family:
            raise RollbackRefused(
                f"task definition {task_definition} belongs to family {match['family']!r}, "
                f"but service {service} runs family {current.family!r}; a rollback stays "
                "in the service's family. Nothing was changed."
            )
        target = describe_task_definition(ecs, task_definition)
        if target is None:
            raise RollbackRefused(
                f"task definition {task_definition} does not exist; see the family's "
                f"revisions with `aws ecs list-task-definitions --family-prefix "
                f"{current.family}`. Nothing was changed."
            )
        resolved_by = "named in the request"
    if target.family != current.family:  # an ARN from history could name another family
        raise RollbackRefused(
            f"task definition {target.ref} is not of family {current.family!r}. Nothing was changed."
        )
    if target.status != "ACTIVE":
        raise RollbackRefused(
            f"task definition {target.ref} is {target.status}, not ACTIVE (deregistered "
            "revisions cannot start new tasks); pick an ACTIVE revision. Nothing was changed."
        )
    return ApplicationRollbackPlan(
        environment=environment,
        cluster=cluster,
        service=service,
        desired_count=int(svc.get("desiredCount", 0)),
        current=current,
        target=target,
        resolved_by=resolved_by,
        env_diff=environment_diff(current, target),
    )


def start_rollback(ecs: Any, plan: ApplicationRollbackPlan) -> str:
    """Point the service at the target; return the id of the deployment that rolls it out."""
    svc = describe_service(ecs, plan.cluster, plan.service)
    if svc is None or service_task_definition_arn(ecs, svc) not in (plan.current.arn, plan.target.arn):
        seen = svc["taskDefinition"] if svc else "no service"
        raise RollbackFailed(
            f"service {plan.service} changed since the plan (now {seen}, planned from "
            f"{plan.current.ref}); nothing was updated. Trigger the rollback again."
        )
    updated = ecs.update_service(
        cluster=plan.cluster, service=plan.service, taskDefinition=plan.target.arn, forceNewDeployment=True
    )["service"]
    primary = next((d for d in updated.get("deployments", []) if d.get("status") == "PRIMARY"), None)
    if primary is None:
        raise RollbackFailed(
            f"update_service on {plan.service} answered without a PRIMARY deployment; "
            "check the service's events in the ECS console"
        )
    return primary["id"]


@dataclass(frozen=True)
class DeploymentProgress:
    stable: bool
    failed: bool
    detail: str


def deployment_progress(
    ecs: Any, cluster: str, service: str, target_arn: str, deployment_id: str
) -> DeploymentProgress:
    """One look at the rollout of ``deployment_id`` (see the module docstring for the rule)."""
    svc = describe_service(ecs, cluster, service)
    if svc is None:
        return DeploymentProgress(False, True, f"service {service} no longer exists in {cluster}")
    deployments = svc.get("deployments", [])
    ours = next((d for d in deployments if d.get("id") == deployment_id), None)
    desired = int(svc.get("desiredCount", 0))
    summary = (
        ", ".join(
            f"{d.get('status')} {d.get('taskDefinition', '').rsplit('/', 1)[-1]} "
            f"running {d.get('runningCount')}/{d.get('desiredCount')} "
            f"{d.get('rolloutState', '')}".strip()
            for d in deployments
        )
        or "no deployments"
    )
    if ours is None:
        return DeploymentProgress(
            False,
            True,
            f"deployment {deployment_id} is gone (the circuit breaker "
            f"rolled it back?); service now: {summary}",
        )
    if ours.get("rolloutState") == "FAILED":
        return DeploymentProgress(
            False,
            True,
            f"deployment {deployment_id} FAILED: "
            f"{ours.get('rolloutStateReason', '')}; service now: {summary}",
        )
    if service_task_definition_arn(ecs, svc) != target_arn:
        return DeploymentProgress(
            False,
            True,
            f"service now runs {svc.get('taskDefinition')}, not the target "
            f"{target_arn}: someone else changed it",
        )
    stable = (
        len(deployments) == 1
        and ours.get("status") == "PRIMARY"
        and ours.get("rolloutState", "COMPLETED") == "COMPLETED"
        and int(ours.get("runningCount", 0)) >= desired
    )
    return DeploymentProgress(stable, False, f"desired {desired}; {summary}")


def verify_running_tasks(
    ecs: Any, cluster: str, service: str, target_arn: str, *, tasks_listed: bool = True
) -> dict:
    """Every RUNNING task of the service runs the target, and as many run as desired.

    ``tasks_listed=False`` is for an ECS that never lists a service's tasks (moto): then only the
    service's own running count and task definition can be checked, and the result says so.
    """
    svc = describe_service(ecs, cluster, service)
    if svc is None:
        raise RollbackFailed(f"service {service} not found in {cluster} after the update")
    desired = int(svc.get("desiredCount", 0))
    task_arns = []
    for page in ecs.get_paginator("list_tasks").paginate(
        cluster=cluster, serviceName=service, desiredStatus="RUNNING"
    ):
        task_arns.extend(page["taskArns"])
    tasks = []
    for i in range(0, len(task_arns), 100):
        tasks.extend(ecs.describe_tasks(cluster=cluster, tasks=task_arns[i : i + 100])["tasks"])
    running = [t for t in tasks if t.get("lastStatus") == "RUNNING"]
    wrong = [t["taskArn"].rsplit("/", 1)[-1] for t in running if t.get("taskDefinitionArn") != target_arn]
    if wrong:
        raise RollbackFailed(
            f"{len(wrong)} running task(s) of {service} are not on the target "
            f"{target_arn.rsplit('/', 1)[-1]}: {', '.join(wrong[:10])}; the deployment "
            "has not replaced them — check the service's events"
        )
    on_target = len(running)
    if tasks_listed:
        if on_target < desired:
            raise RollbackFailed(
                f"{on_target} task(s) of {service} run the target, {desired} desired; "
                "check the service's events and stopped tasks' reasons"
            )
        how = f"{on_target} RUNNING task(s) listed, all on the target"
    else:
        if service_task_definition_arn(ecs, svc) != target_arn or int(svc.get("runningCount", 0)) < desired:
            raise RollbackFailed(
                f"service {service} reports {svc.get('runningCount')}/{desired} running on "
                f"{svc.get('taskDefinition')}, expected the target {target_arn}"
            )
        how = (
            f"ECS lists no tasks here (emulator); the service reports {svc.get('runningCount')}/{desired} "
            "running on the target"
        )
    return {"desired": desired, "running_on_target": on_target, "checked": how}
