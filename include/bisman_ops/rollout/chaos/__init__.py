"""Phase 7, chaos testing: three drills modelled on AWS FIS and the Chaos Toolkit, one after the
other, each in its own task group of the DAG's ``chaos`` group:

- ``replica_failure``: the read replica taken down (RDS refuses to stop a replica, CONTRACT.md:
  phase 2's ``ReplicaControl`` reboots or isolates it); reads must fall back to the primary;
- ``redis_failover``: ElastiCache ``test_failover`` (the sandbox: a real Sentinel failover); the
  application must reconnect and the new primary be reported;
- ``app_task_killed``: ``stop_task`` on one ECS task (the sandbox: one gunicorn worker killed); the
  service must return to its desired count with healthy targets.

Each drill: the steady-state hypothesis (``hypothesis``) must hold before (a wait, so a drill starts
only from a steady state); the fault is injected; the watch probes while it is on until the system
copes, the stop condition fires (errors over the form's ratio for longer than its seconds) or the
recovery time runs out, and then ends the fault at once (the abort); the restore is a teardown
that runs whatever happened and verifies; the hypothesis must hold again after. The last task
returns the drill's journal (hypothesis before and after, what was done, recovery time, whether
the stop condition fired) for the run report.

Staging runs the drills by default; prod only when the form asks for them, and then only after a
separate approval.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.sdk import Param

from bisman_ops import params
from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, context, step
from bisman_ops.rollout.chaos import faults, hypothesis

DRILLS = ("replica_failure", "redis_failover", "app_task_killed")
POKE = timedelta(seconds=15)
WATCH_PROBE_REQUESTS = 5

PARAMS: dict[str, Param] = {
    "chaos_drills": Param(None, type=["null", "boolean"], title="Chaos drills",
                          description="Replica failure, Redis failover and an application task killed, "
                                      "each restored. Empty: on for staging, off for prod; prod also "
                                      "asks for a separate approval."),
    "chaos_stop_error_ratio": Param(0.5, type="number", exclusiveMinimum=0, maximum=1,
                                    title="Stop condition: error ratio",
                                    description="A drill is aborted (its fault ended at once) when more "
                                                "than this share of probe requests fails ..."),
    "chaos_stop_after_seconds": Param(20, type="integer", minimum=0, title="Stop condition: for (s)",
                                      description="... for this long without a break."),
    "chaos_recovery_timeout_seconds": params.wait_seconds(
        180, "Recovery timeout (s)", "How long a drill may take to be coped with before it is aborted."),
    "chaos_steady_state_timeout_seconds": params.wait_seconds(
        300, "Steady-state wait (s)", "How long to wait for the steady state before and after a drill."),
    "chaos_p95_ms": Param(1000, type="number", exclusiveMinimum=0, title="Steady state: p95 (ms)",
                          description="The probe's p95 latency the steady state allows."),
}


def limits(conf: dict[str, Any]) -> hypothesis.Limits:
    """The hypothesis' limits and the stop condition from the form; a stop condition that could
    never fire before the recovery timeout is refused."""
    got = hypothesis.Limits(
        p95_ms=float(conf.get("chaos_p95_ms", 1000)),
        stop_error_ratio=float(conf.get("chaos_stop_error_ratio", 0.5)),
        stop_after_s=float(conf.get("chaos_stop_after_seconds", 20)),
        recovery_timeout_s=float(conf.get("chaos_recovery_timeout_seconds", 180)),
    )
    if not 0 < got.stop_error_ratio <= 1:
        raise CheckFailed("chaos_stop_error_ratio", str(got.stop_error_ratio), "a ratio in (0, 1]",
                          "Trigger again with a valid value")
    if got.stop_after_s >= got.recovery_timeout_s:
        raise CheckFailed("chaos_stop_after_seconds", f"{got.stop_after_s:g} s",
                          f"shorter than chaos_recovery_timeout_seconds ({got.recovery_timeout_s:g} s)",
                          "Trigger again with a shorter stop condition or a longer recovery timeout")
    return got


def plan(settings: dict[str, Any], conf: dict[str, Any]) -> dict[str, Any]:
    """Which drills run, with what limits, and whether a person must approve them first."""
    env = settings["environment"]
    asked = conf.get("chaos_drills")
    enabled = bool(asked) if asked is not None else env != "prod"
    lim = limits(conf)
    body = "\n".join([
        f"Chaos drills in {env}: " + ", ".join(DRILLS) + ", one after the other.",
        f"Stop condition: more than {lim.stop_error_ratio:.0%} of probe requests failing for "
        f"{lim.stop_after_s:g} s aborts a drill; each is restored by a teardown whatever happens.",
        "Approve to run them; Reject (or no answer) runs none and fails the rollout.",
    ])
    return {"environment": env, "enabled": enabled, "drills": list(DRILLS) if enabled else [],
            "approval_needed": enabled and env == "prod", "limits": asdict(lim),
            "subject": f"Run the chaos drills in {env}?", "body": body}


def _limits(drill_plan: dict[str, Any]) -> hypothesis.Limits:
    return hypothesis.Limits(**drill_plan["limits"])


def _probe(outputs: dict[str, Any], tenant_id: int, requests: int = hypothesis.PROBE_REQUESTS) -> dict:
    from bisman_ops.clients import app_http
    from bisman_ops.rollout import read_replica as rr

    def call(method: str, path: str, headers: dict) -> Any:  # one try: a failure is what we measure
        return app_http.request(method, path, headers=headers, timeout=5, attempts=1)

    return hypothesis.probe(call, rr.admin_token(outputs), tenant_id, requests)


def _steady_state(drill: str, drill_plan: dict, outputs: dict, tenant_id: int,
                  extra: list[str] = ()) -> tuple[dict, list[str]]:
    from bisman_ops.monitoring import prometheus

    measured = _probe(outputs, tenant_id)
    alerts = hypothesis.drill_alerts(prometheus.firing_alerts())
    problems = [*hypothesis.problems(measured, alerts, _limits(drill_plan)), *extra]
    return {"drill": drill, **measured, "alerts_firing": alerts}, problems


# -- tasks: the DAG's chaos group ---------------------------------------------------------------


@step
def drills_planned(settings: dict) -> dict:
    return plan(settings, context()["params"])


@step.short_circuit
def drills_enabled(drill_plan: dict) -> bool:
    return bool(drill_plan["enabled"])


@step.short_circuit
def drills_approval_needed(drill_plan: dict) -> bool:
    """Prod asks a person; staging goes on without (the approval is skipped)."""
    return bool(drill_plan["approval_needed"])


@step(trigger_rule="none_failed_min_one_success")
def drills_approved(drill_plan: dict, answer: dict | None) -> dict:
    from bisman_ops.change.approval import approved

    if drill_plan["approval_needed"]:
        approved(answer, f"the chaos drills in {drill_plan['environment']}")
    return {"approval_needed": drill_plan["approval_needed"],
            "approved_by": (answer or {}).get("responded_by_user")}


@step.sensor(poke_interval=POKE, timeout_param="chaos_steady_state_timeout_seconds")
def steady_state_before(drill: str, drill_plan: dict, outputs: dict) -> Poke:
    """A drill starts only from a steady state (an earlier phase's drill may still be settling)."""
    from bisman_ops import config
    from bisman_ops.clients import postgres
    from bisman_ops.rollout import read_replica as rr

    with postgres.connect(config.APP_DB_PRIMARY_CONN_ID, autocommit=True) as primary:
        tenant_id = rr.probe_tenant_id(primary)
    measured, problems = _steady_state(drill, drill_plan, outputs, tenant_id)
    found = faults.fault(drill, outputs).found()
    measured = {**measured, "tenant_id": tenant_id, "found": found}
    if problems:
        return Poke(False, measured, f"steady state before {drill}: " + "; ".join(problems))
    return Poke(True, measured)


@step(changes=True)
def fault_injected(drill: str, outputs: dict, before: dict) -> dict:
    """A fault half-injected is ended at once; killed before it could, the drill's teardown (set up
    by ``fault_intended``) ends it."""
    fault = faults.fault(drill, outputs)
    started = time.time()
    try:
        done = fault.inject()
    except Exception:
        fault.restore(before["found"])
        raise
    return {"drill": drill, "blast_radius": fault.blast_radius, "injected_at": started, **done}


@step(changes=True)
def fault_coped_with(drill: str, drill_plan: dict, outputs: dict, before: dict, injected: dict) -> dict:
    """The watch, fault on. The stop condition or the recovery timeout aborts: the fault is ended
    now, not when the teardown comes, and the drill fails with what was seen."""
    fault = faults.fault(drill, outputs)
    lim = _limits(drill_plan)
    during = hypothesis.watch(
        lambda: fault.coped(injected, int(before["tenant_id"])),
        lambda: _probe(outputs, int(before["tenant_id"]), WATCH_PROBE_REQUESTS),
        lim,
    )
    if during["outcome"] == "coped":
        return during
    aborted = fault.restore(before["found"])
    seen = (f"the stop condition fired: over {lim.stop_error_ratio:.0%} of requests failed for "
            f"{lim.stop_after_s:g} s" if during["stop_condition_fired"]
            else f"not coped with after {lim.recovery_timeout_s:g} s ({during['state']})")
    raise CheckFailed(f"the {drill} drill ({fault.blast_radius})", seen,
                      "the application copes with the fault within the stop condition",
                      "The fault was ended at once (aborted) and the restore verified; fix what the "
                      "journal shows, then clear this drill's group", {**during, "aborted": aborted})


@step(lease=False, changes=True)
def fault_restored(drill: str, outputs: dict, before: dict) -> dict:
    """Teardown: whatever happened after the injection, undo it and verify (without the lease
    check: restoring is right even for a run that lost its lock)."""
    return faults.fault(drill, outputs).restore(before["found"])


@step.sensor(poke_interval=POKE, timeout_param="chaos_steady_state_timeout_seconds")
def steady_state_after(drill: str, drill_plan: dict, settings: dict, outputs: dict, before: dict,
                       injected: dict, during: dict, restored: dict) -> Poke:
    """The hypothesis again, plus what the drill must find back (the replica in sync); done, the
    drill's journal."""
    fault = faults.fault(drill, outputs)
    after, problems = _steady_state(drill, drill_plan, outputs, int(before["tenant_id"]),
                                    fault.after_problems(settings))
    journal = {
        "drill": drill,
        "blast_radius": injected["blast_radius"],
        "hypothesis_before": _summary(before),
        "method": {k: v for k, v in injected.items() if k not in ("drill", "blast_radius")},
        "stop_condition_fired": during["stop_condition_fired"],
        "recovery_s": during["seconds"],
        "during": {k: during[k] for k in ("outcome", "probe_rounds", "requests", "errors",
                                          "worst_error_ratio", "state")},
        "restore": restored,
        "hypothesis_after": _summary(after),
        "after_problems": problems,
    }
    if problems:
        return Poke(False, journal, f"steady state after {drill}: " + "; ".join(problems))
    return Poke(True, journal)


def _summary(measured: dict) -> dict:
    return {k: measured.get(k) for k in ("health", "error_ratio", "p50_ms", "p95_ms", "alerts_firing",
                                         "found")}


@step(trigger_rule="none_failed_min_one_success")
def chaos_gate(drill_plan: dict, journals: list) -> Any:
    from bisman_ops.change.step import Result

    ran = [j for j in journals if j]
    return Result(value={"drills": [j["drill"] for j in ran], "passed": True},
                  measured={"enabled": drill_plan["enabled"], "journal": ran})


@phase
def chaos(settings: Any, outputs: Any) -> Phase:
    """The drills one at a time (one blast radius at a time), each from a steady state, watched
    against its stop condition, restored whatever happened, and steady again."""
    from airflow.sdk import TaskGroup, chain

    from bisman_ops.change.approval import APPROVAL_TIMEOUT, ChangeApproval
    from bisman_ops.change.phase import intent, restore

    drill_plan = drills_planned(settings)
    answer = ChangeApproval(task_id="approve_drills", question=drill_plan, response_timeout=APPROVAL_TIMEOUT)
    previous = drills_approved(drill_plan, answer.output)
    enabled = drills_enabled(drill_plan)
    # Off: everything after the switch is skipped. Staging: the approval alone is skipped.
    chain(drill_plan, enabled, drills_approval_needed(drill_plan), answer, previous)
    enabled >> previous
    journals, restores = [], []
    for drill in DRILLS:
        with TaskGroup(group_id=drill):
            before = steady_state_before(drill, drill_plan, outputs)
            intended = intent(f"inject the {drill} fault, then restore it", task_id="fault_intended")
            injected = fault_injected(drill, outputs, before)
            during = fault_coped_with(drill, drill_plan, outputs, before, injected)
            restored = restore(fault_restored(drill, outputs, before), intent=intended, damage=injected)
            after = steady_state_after(drill, drill_plan, settings, outputs, before, injected, during,
                                       restored)
            chain(previous, before, intended)
            during >> restored  # the restore waits for the watch (or its abort)
        previous = after
        journals.append(after)
        restores.append(restored)
    return Phase(gate=chaos_gate(drill_plan, journals), restores=restores)
