"""The usage meter's and quota enforcement's settings, as the ECS service really runs them.

The checklist greps ``app.js`` and ``.env``; on ECS the truth is the task definition the service
runs. Its application container must set both flags on (docs/usage-metering.md):

- ``USAGE_METER_ENABLED``: every authenticated tenant request is counted into ``client_daily_usage``;
- ``QUOTA_ENFORCEMENT_ENABLED``: a request over a day or month quota is refused with 429.

Only the names leave this module: a value is read to judge it on or off, never returned or shown.
A flag set from a secret (``secrets``) is present, but its value is not read here.
"""

from __future__ import annotations

from typing import Any

from bisman_ops.change.errors import CheckFailed, fail_unless

REQUIRED_FLAGS = ("USAGE_METER_ENABLED", "QUOTA_ENFORCEMENT_ENABLED")
ON_VALUES = ("1", "true", "yes", "on")


def service(ecs: Any, cluster: str, name: str) -> dict:
    """The ACTIVE ECS service ``name`` of ``cluster``; CheckFailed when there is none."""
    found = ecs.describe_services(cluster=cluster, services=[name])["services"]
    svc = next((s for s in found if s.get("status") == "ACTIVE"), None)
    if svc is None:
        raise CheckFailed(f"ECS service {name} in cluster {cluster}", "not found (or not ACTIVE)",
                          "the service Terraform created",
                          "Check the Terraform outputs, then clear this task")
    return svc


def running_task_definition(ecs: Any, svc: dict) -> dict:
    """The task definition the service runs: its PRIMARY deployment's (the service's own field
    while nothing is deploying)."""
    primary = next((d for d in svc.get("deployments") or [] if d.get("status") == "PRIMARY"), None)
    ref = (primary or {}).get("taskDefinition") or svc["taskDefinition"]
    return ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]


def app_container(svc: dict, task_definition: dict) -> dict:
    """The application's container: the one behind the load balancer, else the first essential one."""
    containers = task_definition.get("containerDefinitions") or []
    behind_lb = {lb.get("containerName") for lb in svc.get("loadBalancers") or []}
    for c in containers:
        if c["name"] in behind_lb:
            return c
    essential = [c for c in containers if c.get("essential", True)]
    if not essential:
        raise CheckFailed(f"containers of {task_definition['taskDefinitionArn']}", "none essential",
                          "the application's container", "Fix the task definition, then clear this task")
    return essential[0]


def flags_verdict(task_definition: dict, container: dict) -> dict[str, Any]:
    """Each required flag ``enabled``, ``disabled``, ``missing`` or ``from a secret``; CheckFailed
    naming every flag that is missing or off. The measurement holds names, never values."""
    env = {e["name"]: str(e.get("value", "")) for e in container.get("environment") or []}
    secret_names = {s["name"] for s in container.get("secrets") or []}
    ref = f"{task_definition['family']}:{task_definition['revision']}"
    states: dict[str, str] = {}
    problems = []
    for flag in REQUIRED_FLAGS:
        if flag in env:
            states[flag] = "enabled" if env[flag].strip().lower() in ON_VALUES else "disabled"
        elif flag in secret_names:
            states[flag] = "from a secret"
        else:
            states[flag] = "missing"
        if states[flag] == "missing":
            problems.append(f"{flag} is missing from container {container['name']} of {ref}")
        elif states[flag] == "disabled":
            problems.append(f"{flag} is set in container {container['name']} of {ref} but not on "
                            f"(expected one of {', '.join(ON_VALUES)})")
    measured = {"task_definition": ref, "container": container["name"], "flags": states,
                "environment_names": sorted(env), "secret_names": sorted(secret_names)}
    fail_unless(problems, "usage meter and quota settings in the service's running task definition",
                f"{' and '.join(REQUIRED_FLAGS)} set on",
                "Set them in the application's task definition (Terraform), deploy it, then clear this task",
                measured)
    return measured
