"""The sandbox's faults for the rollout's chaos drills (``bisman_ops.rollout.chaos.faults``),
registered as ``BISMAN_IMPL_REDIS_FAILOVER`` (by ``redis.settings``) and
``BISMAN_IMPL_APP_TASK_KILL`` (by ``app_server.settings``).

moto implements neither ElastiCache's ``test_failover`` (HTTP 500) nor ECS tasks that run, so the
faults are done for real on the sandbox's own services: a Sentinel failover of the Redis pair, and
one gunicorn worker of the stand-in application killed (its master, the supervisor, starts a new
one). Restoring puts the sandbox back as the drill found it: the original Redis master, the full
worker count.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout.chaos.faults import RESTORE_TIMEOUT_S, EcsTaskStop, ElastiCacheFailover, _status
from bisman_sandbox import app_server, redis
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError, wait_until

POLL_S = 0.5
HEALTHY_TIMEOUT_S = 30


def _ctx() -> SandboxContext:
    return SandboxContext.from_env()


@dataclass
class SandboxRedisFailover(ElastiCacheFailover):
    """A real ``SENTINEL FAILOVER``; the primary is whom Sentinel names master."""

    name: str = "redis_failover"

    def primary(self) -> str:
        host, port = redis.master_address(_ctx())
        return f"{host}:{port}"

    def inject(self) -> dict[str, Any]:
        old, new = redis.failover(_ctx())
        return {"fault": "SENTINEL FAILOVER", "old_primary": f"{old[0]}:{old[1]}",
                "new_primary": f"{new[0]}:{new[1]}"}

    def restore(self, found: dict[str, Any]) -> dict[str, Any]:
        """Fail back to the master the drill found (a second failover), then check the pair."""
        ctx = _ctx()
        failed_back = False
        if found.get("primary") and self.primary() != found["primary"]:
            redis.failover(ctx)
            failed_back = True
        try:  # Sentinel sees the demoted master as a replica on its next INFO round (10 s)
            wait_until(lambda: redis.healthy(ctx), timeout=HEALTHY_TIMEOUT_S, what="the Redis pair")
        except SandboxError:
            pass
        if self.primary() != found.get("primary", self.primary()) or not redis.healthy(ctx):
            raise CheckFailed("the sandbox's Redis after the drill", f"master {self.primary()}",
                              f"master {found.get('primary')} with its replica attached",
                              "Run python -m bisman_sandbox up")
        return {"primary": self.primary(), "failed_back": failed_back,
                "health_redis": _status("GET", "/api/health/redis")}


@dataclass
class SandboxAppTaskKill(EcsTaskStop):
    """SIGKILL to one gunicorn worker; gunicorn's master replaces it, as ECS replaces a task."""

    name: str = "app_task_killed"

    def found(self) -> dict[str, Any]:
        return {"workers": len(app_server.worker_pids(_ctx())), "desired": app_server.WORKERS}

    def inject(self) -> dict[str, Any]:
        workers = app_server.worker_pids(_ctx())
        if not workers:
            raise CheckFailed("the sandbox application's workers", "none", "at least one to kill",
                              "Run python -m bisman_sandbox up")
        os.kill(workers[0], signal.SIGKILL)
        return {"fault": "SIGKILL to a gunicorn worker", "stopped": str(workers[0]),
                "running_before": len(workers)}

    def _state(self) -> dict[str, Any]:
        workers = app_server.worker_pids(_ctx())
        return {"running": len(workers), "desired": app_server.WORKERS,
                "tasks": [str(pid) for pid in workers], "health": _status("GET", "/health")}

    def coped(self, injected: dict[str, Any], tenant_id: int) -> tuple[bool, dict[str, Any]]:
        state = self._state()
        done = (state["running"] >= state["desired"] and injected["stopped"] not in state["tasks"]
                and state["health"] == 200)
        return done, {k: v for k, v in state.items() if k != "tasks"}

    def restore(self, found: dict[str, Any]) -> dict[str, Any]:
        """The supervisor replaces the worker; if the master itself is gone, start the server."""
        ctx = _ctx()
        if app_server.master_pid(ctx) is None:
            app_server.up(ctx)
        deadline = time.monotonic() + min(RESTORE_TIMEOUT_S, 60)
        while True:
            state = self._state()
            if state["running"] >= found.get("workers", app_server.WORKERS) and state["health"] == 200:
                return {k: v for k, v in state.items() if k != "tasks"}
            if time.monotonic() >= deadline:
                raise CheckFailed("the sandbox application after the drill", str(state),
                                  f"{found.get('workers')} workers and /health 200",
                                  "Run python -m bisman_sandbox up")
            time.sleep(POLL_S)
