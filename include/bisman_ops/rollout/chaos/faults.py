"""The faults the chaos drills inject, each behind a small interface (``Fault``) with its AWS
implementation; a deployment that differs (the local sandbox) registers its own through
``bisman_ops.extension`` (``BISMAN_IMPL_REDIS_FAILOVER``, ``BISMAN_IMPL_APP_TASK_KILL``; the
replica drill reuses phase 2's ``ReplicaControl``).

A fault is built from the Terraform outputs. ``found()`` records what the drill starts from,
``inject()`` does the damage, ``coped(injected)`` says whether the system copes (the fault still on),
``restore(found)`` undoes what can be undone and verifies it (idempotent: the abort and the teardown
may both call it), and ``after_problems(settings)`` names what is still not back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import read_replica as rr

RESTORE_TIMEOUT_S = 300
POLL_S = 2.0
REDIS_NODE_GROUP = "0001"


class Fault(Protocol):
    name: str
    blast_radius: str

    def found(self) -> dict[str, Any]: ...

    def inject(self) -> dict[str, Any]: ...

    def coped(self, injected: dict[str, Any], tenant_id: int) -> tuple[bool, dict[str, Any]]: ...

    def restore(self, found: dict[str, Any]) -> dict[str, Any]: ...

    def after_problems(self, settings: dict[str, Any]) -> list[str]: ...


def _status(method: str, path: str) -> int | str:
    try:
        return rr.app_call(method, path, {}).status_code
    except Exception as exc:  # unreachable counts as not coping
        return type(exc).__name__


def _until(check, timeout_s: float, what: str, next_step: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        done, state = check()
        if done:
            return state
        if time.monotonic() >= deadline:
            raise CheckFailed(what, str(state), f"restored within {timeout_s:.0f} s", next_step, state)
        time.sleep(POLL_S)


# -- replica failure ------------------------------------------------------------------------------


@dataclass
class ReplicaFailure:
    """Phase 2's drill: the replica taken down (``ReplicaControl``), reads must fall back."""

    outputs: dict[str, Any]
    name: str = "replica_failure"
    blast_radius: str = "the read replica; reads fall back to the primary, writes are untouched"

    def _control(self) -> rr.ReplicaControl:
        return rr.replica_control(rr.aws("rds"), self.outputs["db_replica_identifier"])

    def found(self) -> dict[str, Any]:
        return {"replica": self.outputs["db_replica_identifier"]}

    def inject(self) -> dict[str, Any]:
        return self._control().take_down()

    def coped(self, injected: dict[str, Any], tenant_id: int) -> tuple[bool, dict[str, Any]]:
        try:
            measured = rr.verify_fallback(rr.app_call, rr.admin_token(self.outputs), rr.aws("logs"),
                                          self.outputs["app_log_group"], tenant_id)
        except CheckFailed as exc:
            return False, exc.measured or {"problem": exc.seen}
        return True, {k: v for k, v in measured.items() if k != "fallback_log_line"}

    def restore(self, found: dict[str, Any]) -> dict[str, Any]:
        return self._control().restore()

    def after_problems(self, settings: dict[str, Any]) -> list[str]:
        threshold = float(settings["replica_lag_threshold_s"])
        poke = rr.lag_poke(rr.aws("cloudwatch"), self.outputs["db_replica_identifier"], threshold)
        return [] if poke.done else [poke.waiting_for]


# -- Redis failover ------------------------------------------------------------------------------


@dataclass
class ElastiCacheFailover:
    """ElastiCache ``test_failover`` of the replication group's node group: the replica is
    promoted; the application must reconnect to it."""

    outputs: dict[str, Any]
    name: str = "redis_failover"
    blast_radius: str = "the Redis primary; the application reconnects to the promoted replica"

    @property
    def group_id(self) -> str:
        return self.outputs["redis_replication_group_id"]

    def _group(self) -> dict[str, Any]:
        return rr.aws("elasticache").describe_replication_groups(ReplicationGroupId=self.group_id)[
            "ReplicationGroups"][0]

    def primary(self) -> str:
        group = self._group()
        for member in group["NodeGroups"][0].get("NodeGroupMembers", []):
            if member.get("CurrentRole") == "primary":
                return member["CacheClusterId"]
        return group["NodeGroups"][0].get("PrimaryEndpoint", {}).get("Address", "unknown")

    def found(self) -> dict[str, Any]:
        return {"primary": self.primary()}

    def inject(self) -> dict[str, Any]:
        old = self.primary()
        rr.aws("elasticache").test_failover(ReplicationGroupId=self.group_id, NodeGroupId=REDIS_NODE_GROUP)
        return {"fault": "test_failover", "replication_group": self.group_id, "old_primary": old}

    def coped(self, injected: dict[str, Any], tenant_id: int) -> tuple[bool, dict[str, Any]]:
        primary, health = self.primary(), _status("GET", "/api/health/redis")
        state = {"primary": primary, "old_primary": injected["old_primary"], "health_redis": health}
        return primary != injected["old_primary"] and health == 200, state

    def restore(self, found: dict[str, Any]) -> dict[str, Any]:
        """The promoted replica stays primary (ElastiCache does not fail back); restored means the
        group is available again with the application healthy on it."""
        def check():
            status, health = self._group().get("Status"), _status("GET", "/api/health/redis")
            return status == "available" and health == 200, {"status": status, "health_redis": health}

        state = _until(check, RESTORE_TIMEOUT_S, f"Redis replication group {self.group_id}",
                       "Check the replication group in the ElastiCache console")
        return {**state, "primary": self.primary()}

    def after_problems(self, settings: dict[str, Any]) -> list[str]:
        return []


# -- application task killed -----------------------------------------------------------------------


@dataclass
class EcsTaskStop:
    """``stop_task`` on one running task of the service: ECS must start a replacement and the load
    balancer's targets must be healthy again."""

    outputs: dict[str, Any]
    name: str = "app_task_killed"
    blast_radius: str = "one application task; the others serve while ECS replaces it"

    def _ecs(self) -> Any:
        return rr.aws("ecs")

    def _running(self) -> list[str]:
        return self._ecs().list_tasks(cluster=self.outputs["ecs_cluster_name"],
                                      serviceName=self.outputs["ecs_service_name"],
                                      desiredStatus="RUNNING")["taskArns"]

    def _state(self) -> dict[str, Any]:
        service = self._ecs().describe_services(cluster=self.outputs["ecs_cluster_name"],
                                                services=[self.outputs["ecs_service_name"]])["services"][0]
        elb = rr.aws("elbv2")
        targets = [t["TargetHealth"]["State"]
                   for group in elb.describe_target_groups(LoadBalancerArn=self.outputs["alb_arn"])[
                       "TargetGroups"]
                   for t in elb.describe_target_health(TargetGroupArn=group["TargetGroupArn"])[
                       "TargetHealthDescriptions"]]
        return {"running": service["runningCount"], "desired": service["desiredCount"], "targets": targets,
                "tasks": self._running()}

    def found(self) -> dict[str, Any]:
        state = self._state()
        return {"running": state["running"], "desired": state["desired"]}

    def inject(self) -> dict[str, Any]:
        tasks = self._running()
        if not tasks:
            raise CheckFailed(f"running tasks of {self.outputs['ecs_service_name']}", "none",
                              "at least one to stop", "Check the service in the ECS console")
        self._ecs().stop_task(cluster=self.outputs["ecs_cluster_name"], task=tasks[0],
                              reason="bisman_rollout chaos drill")
        return {"fault": "stop_task", "stopped": tasks[0], "running_before": len(tasks)}

    def coped(self, injected: dict[str, Any], tenant_id: int) -> tuple[bool, dict[str, Any]]:
        state = self._state()
        done = (state["running"] >= state["desired"] and injected["stopped"] not in state["tasks"]
                and bool(state["targets"]) and all(t == "healthy" for t in state["targets"]))
        return done, {k: v for k, v in state.items() if k != "tasks"}

    def restore(self, found: dict[str, Any]) -> dict[str, Any]:
        """Nothing to undo (ECS replaces the task): wait until the service is back at its count."""
        def check():
            state = self._state()
            return state["running"] >= found.get("desired", state["desired"]), state

        return _until(check, RESTORE_TIMEOUT_S, f"service {self.outputs['ecs_service_name']}",
                      "Check the service's events in the ECS console")

    def after_problems(self, settings: dict[str, Any]) -> list[str]:
        return []


DEFAULTS: dict[str, type] = {
    "replica_failure": ReplicaFailure,
    "redis_failover": ElastiCacheFailover,
    "app_task_killed": EcsTaskStop,
}
EXTENSIONS = {"redis_failover": "redis_failover", "app_task_killed": "app_task_kill"}


def fault(drill: str, outputs: dict[str, Any], environ: dict | None = None) -> Fault:
    """The drill's fault: the configured implementation (``BISMAN_IMPL_*``), else AWS's."""
    from bisman_ops import extension

    if drill not in DEFAULTS:
        raise ValueError(f"unknown chaos drill {drill!r} (known: {', '.join(DEFAULTS)})")
    cls = DEFAULTS[drill]
    if drill in EXTENSIONS:
        cls = extension.load(EXTENSIONS[drill], cls, environ)
    return cls(outputs)
