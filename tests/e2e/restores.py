"""Restores shown on real runs: the process of each damaging step is killed (SIGKILL, a fail point of
``bisman_ops.change.failpoints``) right after its damage, before it could report; its restore must
run anyway and the environment be back; clearing the killed step with its downstream tasks, as the
DAG's docs tell an operator, resumes the run (the lock re-acquired by it, the damage done again).

The session's Airflow reads the fail points from ``failpoints_file`` (``session_airflow_env``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bisman_ops.rollout.scheduled_jobs import SMOKE_SLUG_PREFIX
from bisman_ops.rollout.usage_metering.tenants import SLUG_PREFIX as TEST_SLUG_PREFIX
from bisman_sandbox import app_server, pgbouncer, postgres, redis
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError, wait_until
from tests.e2e import approvals

ENDED = ("success", "failed", "upstream_failed", "skipped")
BACK_TIMEOUT = 60  # a restore verifies its own work; the last of it (a replica streaming) within this


def failpoints_file(sandbox: SandboxContext) -> Path:
    return sandbox.path("failpoints.json")


def arm(sandbox: SandboxContext, dag_id: str, run_id: str, task_ids: list[str],
        at: str | None = None) -> None:
    """Each of ``task_ids`` in this run is killed on its first try after its damage (or at the point
    ``at`` inside it), added to what is armed already: runs of other tests keep theirs."""
    path = failpoints_file(sandbox)
    entries = json.loads(path.read_text()) if path.exists() else []
    where = {"at": at} if at else {}
    entries += [{"dag_id": dag_id, "run_id": run_id, "task_id": t, "try_number": 1, **where}
                for t in task_ids]
    path.write_text(json.dumps(entries))


# -- what shows each environment back (measured here, asserted by the tests) -----------------------------

def _tenants_left(sandbox: SandboxContext, prefix: str) -> int:
    with postgres.connect(postgres.dsn(sandbox, "primary")) as conn:
        return conn.execute("SELECT count(*) FROM tenants WHERE slug LIKE %s", (prefix + "%",)).fetchone()[0]


def _within(condition: Callable[[], bool], what: str) -> bool:
    try:
        wait_until(condition, timeout=BACK_TIMEOUT, what=what, interval=1)
    except SandboxError:
        return False
    return True


def no_test_tenant(sandbox: SandboxContext, before: dict) -> dict:
    return {"test tenants left": _tenants_left(sandbox, TEST_SLUG_PREFIX)}


def no_smoke_tenant(sandbox: SandboxContext, before: dict) -> dict:
    return {"smoke tenants left": _tenants_left(sandbox, SMOKE_SLUG_PREFIX)}


def replica_streams(sandbox: SandboxContext, before: dict) -> dict:
    streaming = _within(lambda: postgres.replica_streaming(sandbox), "the replica streaming")
    return {"replica streaming": streaming}


def app_answers_200(sandbox: SandboxContext, before: dict) -> dict:
    return {"app answers 200": app_server.healthy(sandbox)}


def app_at_full_strength(sandbox: SandboxContext, before: dict) -> dict:
    full = _within(lambda: len(app_server.worker_pids(sandbox)) == app_server.WORKERS, "every app worker")
    return {**app_answers_200(sandbox, before), "app workers all running": full}


def redis_on_its_master(sandbox: SandboxContext, before: dict) -> dict:
    return {"redis master as before": redis.master_address(sandbox) == before["redis_master"]}


def pool_not_paused(sandbox: SandboxContext, before: dict) -> dict:
    with postgres.connect(pgbouncer.dsn(sandbox, "rw")) as conn:
        answered = conn.execute("SELECT 1").fetchone()[0] == 1
    return {"pgbouncer pools paused": pgbouncer.paused_databases(sandbox), "query through the pool": answered}


# What each "back" must read.
BACK = {"test tenants left": 0, "smoke tenants left": 0, "replica streaming": True, "app answers 200": True,
        "app workers all running": True, "redis master as before": True, "pgbouncer pools paused": [],
        "query through the pool": True}


def before_the_damage(sandbox: SandboxContext) -> dict:
    """What a restore must find back that the sandbox does not fix (the Redis master it found)."""
    return {"redis_master": redis.master_address(sandbox)}


@dataclass(frozen=True)
class Kill:
    damage: str  # the task whose process is killed after its damage
    restore: str  # the restore that must run anyway
    back: Callable[[SandboxContext, dict], dict]  # the environment back, shown


def chaos(drill: str, back: Callable[[SandboxContext, dict], dict]) -> Kill:
    return Kill(f"chaos.{drill}.fault_injected", f"chaos.{drill}.fault_restored", back)


# Each round: the kills one pass of the rollout reaches (in one phase, side by side), in run order.
ROLLOUT_ROUNDS: dict[str, list[list[Kill]]] = {
    "read_replica": [[Kill("read_replica.replica_taken_down", "read_replica.replica_restored",
                           replica_streams)]],
    "usage_metering": [[Kill("usage_metering.test_tenants_created", "usage_metering.test_tenants_removed",
                             no_test_tenant)]],
    "scheduled_jobs": [[Kill("scheduled_jobs.smoke_tenants_created", "scheduled_jobs.smoke_tenants_removed",
                             no_smoke_tenant)]],
    "monitoring": [[Kill("monitoring.probe_tenant_created", "monitoring.probe_tenant_removed",
                         no_test_tenant),
                    Kill("monitoring.app_errors_started", "monitoring.app_errors_stopped", app_answers_200)]],
    "chaos": [[chaos("replica_failure", replica_streams)], [chaos("redis_failover", redis_on_its_master)],
              [chaos("app_task_killed", app_at_full_strength)]],
}


def rollout_kills() -> list[str]:
    return [k.damage for rounds in ROLLOUT_ROUNDS.values() for kills in rounds for k in kills]


def ended(af, dag_id: str, run_id: str, task_id: str, timeout: float) -> dict[str, Any]:
    wait_until(lambda: approvals.task_instance(af, dag_id, run_id, task_id)["state"] in ENDED,
               timeout=timeout, what=f"{task_id} to end", interval=2)
    return approvals.task_instance(af, dag_id, run_id, task_id)


def settled(af, dag_id: str, run_id: str, asking: str | None = None) -> bool:
    """The run has nothing left to do on its own: it ended, or waits at ``asking`` (the rollout's
    rollback offer, after its lock release and report steps). Cleared before, a task the scheduler
    was still marking from the old states can be marked upstream_failed after the clear and is never
    run again (seen here: a restore left so, then skipped at the next kill), and one cleared while
    it runs comes back only after its worker's heartbeat times out (6.5 min seen here)."""
    if af.run(dag_id, run_id)["state"] in ("success", "failed"):
        return True
    return bool(asking) and approvals.task_instance(af, dag_id, run_id, asking)["state"] == "awaiting_input"


def phase_of(task_id: str) -> str:
    return task_id.split(".", 1)[0]


def survive_round(af, sandbox: SandboxContext, dag_id: str, run_id: str, kills: list[Kill], before: dict,
                  timeout: float, asking: str | None = None,
                  phases: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """What each killed step did (its try and state), what its restore did and what showed the
    environment back; once the run has settled, how far the failure went (the gates of its phase
    and of ``phases`` after it); then the killed steps are cleared with their downstream tasks and
    run again (their second try). Measured, not asserted: the tests read it."""
    seen = []
    for kill in kills:
        killed = ended(af, dag_id, run_id, kill.damage, timeout)
        restored = ended(af, dag_id, run_id, kill.restore, 600)
        seen.append({"killed": kill.damage, "try": killed["try_number"], "state": killed["state"],
                     "restore": kill.restore, "restored": restored["state"], **kill.back(sandbox, before)})
    wait_until(lambda: settled(af, dag_id, run_id, asking), timeout=600, what=f"{run_id} to settle",
               interval=2)
    if phases:
        later = phases[phases.index(phase_of(kills[0].damage)):]
        gates = {p: approvals.task_instance(af, dag_id, run_id, f"{p}.{p}_gate")["state"] for p in later}
        for s in seen:
            s["gates"] = gates
    failed = [s["killed"] for s in seen if s["state"] == "failed"]
    if failed:
        af.clear(dag_id, run_id, failed)
    for task_id in failed:
        wait_until(lambda t=task_id: approvals.task_instance(af, dag_id, run_id, t)["try_number"] > 1,
                   timeout=300, what=f"{task_id} cleared", interval=2)
        ended(af, dag_id, run_id, task_id, timeout)
    return seen
