"""Application rollback: point the ECS service back at an earlier task definition.

``validate_request`` checks the request and resolves the target (nothing changes); ``start_rollback``
updates the service once (idempotent: a service already deploying the target is not deployed
again); ``deployment_poke`` is the sensor's single look; ``verify_running_tasks`` checks what the
service runs afterwards.

No environment value leaves this module: the plan carries, per container, the NAMES of the
environment variables and secrets and, in the difference table, whether each one changed. Values
(a ``DB_PASS`` or a ``DATABASE_URL_REPLICA`` as much as any other) never reach XCom, a rendered
field, the report or a log line.

The wait follows our deployment by id: ``update_service`` answers with the PRIMARY deployment. The
service is stable when that deployment is the only one, its rollout is COMPLETED (when the circuit
breaker reports it) and it runs the desired count. A FAILED rollout, or our deployment disappearing
(the circuit breaker rolled back), ends the wait at once.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.step import Poke
from bisman_ops.clients.aws import error_code
from bisman_ops.naming import ResourceNames
from bisman_ops.rollback import NOTHING_CHANGED, check_confirm, check_in_environment, tags_of

TASK_DEFINITION_REF = re.compile(r"^(?P<family>[A-Za-z0-9_-]{1,255}):(?P<revision>[0-9]{1,9})$")


@dataclass(frozen=True)
class TaskDefinitionView:
    """A task definition as the rollback may show it: images and the names of its settings."""

    arn: str
    family: str
    revision: int
    status: str
    images: dict[str, str]  # container -> image
    environment: dict[str, list[str]]  # container -> names of plain environment variables
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
            environment={c["name"]: sorted(e["name"] for e in c.get("environment", [])) for c in containers},
            secrets={c["name"]: sorted(s["name"] for s in c.get("secrets", [])) for c in containers},
        )


def _raw_task_definition(ecs: Any, ref: str) -> dict | None:
    try:
        return ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]
    except Exception as exc:
        if error_code(exc) in ("ClientException", "InvalidParameterException", "ResourceNotFoundException"):
            return None
        raise


def describe_task_definition(ecs: Any, ref: str) -> TaskDefinitionView | None:
    """The task definition ``ref`` (family:revision or ARN), or None if ECS does not know it."""
    td = _raw_task_definition(ecs, ref)
    return TaskDefinitionView.from_api(td) if td else None


def describe_service(ecs: Any, cluster: str, service: str) -> dict | None:
    try:
        found = ecs.describe_services(cluster=cluster, services=[service], include=["TAGS"])["services"]
    except Exception as exc:
        if error_code(exc) == "ClusterNotFoundException":
            return None
        raise
    return next((s for s in found if s.get("status") == "ACTIVE"), None)


def _cluster_tags(ecs: Any, cluster: str) -> dict[str, str]:
    found = ecs.describe_clusters(clusters=[cluster], include=["TAGS"]).get("clusters", [])
    return tags_of(found[0].get("tags")) if found else {}


def service_task_definition_arn(ecs: Any, svc: dict) -> str:
    """The service's task definition as an ARN (moto keeps whatever string update_service got)."""
    ref = svc.get("taskDefinition", "")
    if ref.startswith("arn:"):
        return ref
    td = describe_task_definition(ecs, ref)
    return td.arn if td else ref


def environment_changes(ecs: Any, current_arn: str, target_arn: str) -> list[list[str]]:
    """Rows [container, name, change] for every variable or secret that differs: ``added``,
    ``removed`` or ``value changed`` (values are compared here and never returned)."""
    cur, tgt = _raw_task_definition(ecs, current_arn) or {}, _raw_task_definition(ecs, target_arn) or {}

    def settings(td: dict) -> dict[tuple[str, str], str]:
        out = {}
        for c in td.get("containerDefinitions", []):
            out.update({(c["name"], e["name"]): e.get("value", "") for e in c.get("environment", [])})
            out.update(
                {(c["name"], f"{s['name']} (secret)"): s.get("valueFrom", "") for s in c.get("secrets", [])}
            )
        return out

    a, b = settings(cur), settings(tgt)
    rows = []
    for key in sorted(set(a) | set(b)):
        if key not in b:
            rows.append([*key, "removed"])
        elif key not in a:
            rows.append([*key, "added"])
        elif a[key] != b[key]:
            rows.append([*key, "value changed"])
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
    env_changes: list[list[str]] = field(default_factory=list)  # [container, name, change]
    bound_by: str = ""

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


def previous_from_history(history: list[str], current_arn: str) -> tuple[str | None, str | None]:
    """The task definition to go back to, from the service's successful deployments (newest first).

    Returns ``(previous, rolled_back_from)``. When the current revision came back by a rollback,
    the deployment just before it in the history is the release that was rolled back from: it is
    skipped (and every deployment of it), so ``previous`` never returns to the bad release."""

    def revision(arn: str) -> int:
        return int(arn.rsplit(":", 1)[-1]) if arn.rsplit(":", 1)[-1].isdigit() else -1

    older = [arn for arn in history if arn != current_arn]
    if history and history[0] != current_arn:
        return (older[0] if older else None), None
    rolled_back_from = older[0] if older and revision(older[0]) > revision(current_arn) else None
    return next((arn for arn in older if arn != rolled_back_from), None), rolled_back_from


def deployment_history(ecs: Any, cluster: str, service: str) -> list[str]:
    """Task definitions of the service's successful deployments, newest first; [] when ECS's
    deployment history (ListServiceDeployments) is unavailable (older API, emulator)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        listed = ecs.list_service_deployments(cluster=cluster, service=service, status=["SUCCESSFUL"])
        arns = [d["serviceDeploymentArn"] for d in listed.get("serviceDeployments", [])]
        if not arns:
            return []
        deployments = ecs.describe_service_deployments(serviceDeploymentArns=arns[:20])["serviceDeployments"]
        ordered = sorted(deployments, key=lambda d: d.get("createdAt") or 0, reverse=True)
        revision_arns = [d["targetServiceRevision"]["arn"] for d in ordered if d.get("targetServiceRevision")]
        if not revision_arns:
            return []
        revisions = ecs.describe_service_revisions(serviceRevisionArns=revision_arns)["serviceRevisions"]
    except (AttributeError, BotoCoreError, ClientError):
        # The API is missing (an older botocore or ECS, an emulator) or refused: the revision list
        # is always there. A malformed answer is not swallowed: it would hide a wrong ``previous``.
        return []
    by_arn = {r["serviceRevisionArn"]: r["taskDefinition"] for r in revisions}
    return [by_arn[a] for a in revision_arns if a in by_arn]


def previous_revision(ecs: Any, current: TaskDefinitionView) -> TaskDefinitionView | None:
    """The highest ACTIVE revision of the current family below the current revision."""
    candidates = []
    for page in ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix=current.family, status="ACTIVE", sort="DESC"
    ):
        for arn in page["taskDefinitionArns"]:
            family, _, revision = arn.rsplit("/", 1)[-1].rpartition(":")
            if family == current.family and int(revision) < current.revision:
                candidates.append(int(revision))
    return describe_task_definition(ecs, f"{current.family}:{max(candidates)}") if candidates else None


def validate_request(
    ecs: Any,
    *,
    names: ResourceNames,
    cluster: str | None,
    service: str | None,
    task_definition: str,
    confirm: str | None,
) -> ApplicationRollbackPlan:
    """Check the request and resolve the target. Raises CheckFailed; changes nothing."""
    cluster = cluster or names.ecs_cluster_name
    service = service or names.ecs_service_name
    check_confirm(confirm, service, "the service name")
    svc = describe_service(ecs, cluster, service)
    if svc is None:
        raise CheckFailed(
            "ECS service",
            f"{service!r} not found (or not ACTIVE) in cluster {cluster!r}",
            "an active service",
            NOTHING_CHANGED,
        )
    check_in_environment("ECS cluster", cluster, names.ecs_cluster_name, _cluster_tags(ecs, cluster), names)
    bound_by = check_in_environment(
        "ECS service", service, names.ecs_service_name, tags_of(svc.get("tags")), names
    )
    current = describe_task_definition(ecs, svc["taskDefinition"])
    if current is None:
        raise CheckFailed(
            "the service's task definition",
            f"{svc['taskDefinition']} cannot be described",
            "a described task definition",
            NOTHING_CHANGED,
        )

    if task_definition == "previous":
        target, resolved_by = None, ""
        previous, skipped = previous_from_history(deployment_history(ecs, cluster, service), current.arn)
        if previous:
            target = describe_task_definition(ecs, previous)
            resolved_by = "the service's deployment history (last successful deployment before this one"
            resolved_by += (
                f", skipping {skipped.rsplit('/', 1)[-1]} it was rolled back from)" if skipped else ")"
            )
        if target is None:
            target = previous_revision(ecs, current)
            resolved_by = f"the highest ACTIVE revision of {current.family} below {current.revision}"
        if target is None:
            raise CheckFailed(
                "task_definition previous",
                f"no ACTIVE revision of {current.family} before {current.ref}",
                "an earlier revision",
                "name one as family:revision",
            )
    else:
        match = TASK_DEFINITION_REF.match(task_definition or "")
        if not match:
            raise CheckFailed(
                "task_definition", repr(task_definition), "previous or family:revision", NOTHING_CHANGED
            )
        if match["family"] != current.family:
            raise CheckFailed(
                "task_definition",
                f"{task_definition} of family {match['family']!r}",
                f"a revision of the service's family {current.family!r}",
                NOTHING_CHANGED,
            )
        target = describe_task_definition(ecs, task_definition)
        if target is None:
            raise CheckFailed(
                "task_definition",
                f"{task_definition} does not exist",
                f"one of `aws ecs list-task-definitions --family-prefix {current.family}`",
                NOTHING_CHANGED,
            )
        resolved_by = "named in the request"
    if target.family != current.family:  # an ARN from history could name another family
        raise CheckFailed("task_definition", f"{target.ref}", f"family {current.family!r}", NOTHING_CHANGED)
    if target.status != "ACTIVE":
        raise CheckFailed(
            "task_definition",
            f"{target.ref} is {target.status}",
            "ACTIVE (deregistered revisions cannot start tasks)",
            NOTHING_CHANGED,
        )
    return ApplicationRollbackPlan(
        environment=names.environment,
        cluster=cluster,
        service=service,
        desired_count=int(svc.get("desiredCount", 0)),
        current=current,
        target=target,
        resolved_by=resolved_by,
        env_changes=environment_changes(ecs, current.arn, target.arn),
        bound_by=bound_by,
    )


def _primary(svc: dict) -> dict | None:
    return next((d for d in svc.get("deployments", []) if d.get("status") == "PRIMARY"), None)


def start_rollback(ecs: Any, plan: ApplicationRollbackPlan) -> dict:
    """Point the service at the target once; returns ``{"deployment_id", "deployed"}``.

    Idempotent: a service whose PRIMARY deployment already targets the revision (a retry of this
    task, or botocore's retry of a call that reached ECS) is not deployed again; its deployment is
    followed instead. ``ecs`` should make a single attempt (``clients.aws.client(..., attempts=1)``).
    """
    svc = describe_service(ecs, plan.cluster, plan.service)
    on_target = svc is not None and service_task_definition_arn(ecs, svc) == plan.target.arn
    if svc is None or (not on_target and service_task_definition_arn(ecs, svc) != plan.current.arn):
        seen = svc["taskDefinition"] if svc else "no service"
        raise CheckFailed(
            f"service {plan.service} before the update",
            f"now {seen}",
            f"{plan.current.ref} as planned",
            "nothing was updated; trigger the rollback again",
        )
    primary = _primary(svc)
    if on_target and primary is not None and primary.get("rolloutState") != "FAILED":
        return {"deployment_id": primary["id"], "deployed": False}
    updated = ecs.update_service(
        cluster=plan.cluster, service=plan.service, taskDefinition=plan.target.arn, forceNewDeployment=True
    )["service"]
    primary = _primary(updated)
    if primary is None:
        raise CheckFailed(
            f"update_service on {plan.service}",
            "no PRIMARY deployment in the answer",
            "a PRIMARY deployment",
            "check the service's events in the ECS console",
        )
    return {"deployment_id": primary["id"], "deployed": True}


def deployment_poke(ecs: Any, cluster: str, service: str, target_arn: str, deployment_id: str) -> Poke:
    """One look at the rollout of ``deployment_id`` (see the module docstring for the rule)."""
    svc = describe_service(ecs, cluster, service)
    if svc is None:
        raise CheckFailed(
            f"service {service}", "no longer exists", f"ACTIVE in {cluster}", "check the console"
        )
    deployments = svc.get("deployments", [])
    ours = next((d for d in deployments if d.get("id") == deployment_id), None)
    desired = int(svc.get("desiredCount", 0))
    summary = (
        ", ".join(
            f"{d.get('status')} {d.get('taskDefinition', '').rsplit('/', 1)[-1]} running "
            f"{d.get('runningCount')}/{d.get('desiredCount')} {d.get('rolloutState', '')}".strip()
            for d in deployments
        )
        or "no deployments"
    )
    measured = {"deployment": deployment_id, "service": summary}
    next_step = "check the service's events and stopped tasks' reasons; clear this task to wait again"
    if ours is None:
        raise CheckFailed(
            f"deployment {deployment_id}",
            f"gone (circuit breaker rollback?); {summary}",
            "rolling out",
            next_step,
            measured,
        )
    if ours.get("rolloutState") == "FAILED":
        raise CheckFailed(
            f"deployment {deployment_id}",
            f"FAILED: {ours.get('rolloutStateReason', '')}",
            "COMPLETED",
            next_step,
            measured,
        )
    if service_task_definition_arn(ecs, svc) != target_arn:
        raise CheckFailed(
            f"service {service}",
            f"runs {svc.get('taskDefinition')}",
            f"the target {target_arn}",
            "someone else changed it; check who before going on",
            measured,
        )
    stable = (
        len(deployments) == 1
        and ours.get("status") == "PRIMARY"
        and ours.get("rolloutState", "COMPLETED") == "COMPLETED"
        and int(ours.get("runningCount", 0)) >= desired
    )
    return Poke(
        stable,
        measured,
        f"deployment {deployment_id} to be the only one, COMPLETED, running the "
        f"{desired} desired ({summary})",
    )


def verify_running_tasks(ecs: Any, tasks: Any, cluster: str, service: str, target_arn: str) -> dict:
    """Every RUNNING task of the service runs the target, and as many run as desired. ``tasks`` is
    the configured ``ServiceTasks`` (rollback.interfaces)."""
    svc = describe_service(ecs, cluster, service)
    if svc is None:
        raise CheckFailed(
            f"service {service}", "not found after the update", f"ACTIVE in {cluster}", "check it"
        )
    desired = int(svc.get("desiredCount", 0))
    running = tasks.running(ecs, cluster, service)
    wrong = [t["id"] for t in running if t["task_definition"] != target_arn]
    short = target_arn.rsplit("/", 1)[-1]
    if wrong:
        raise CheckFailed(
            f"running tasks of {service}",
            f"{len(wrong)} not on {short}: {', '.join(wrong[:10])}",
            f"all on {short}",
            "the deployment has not replaced them; check the service's events",
        )
    if len(running) < desired:
        raise CheckFailed(
            f"running tasks of {service}",
            f"{len(running)} on {short}",
            f"{desired} (desired)",
            "check the service's events and stopped tasks' reasons",
        )
    return {"desired": desired, "running on target": len(running)}
