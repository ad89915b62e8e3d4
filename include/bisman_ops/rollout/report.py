"""The rollout's run report, assembled from what each task left: its result (measurements), its
state and duration, the approval's answer, and the failure that stopped the run.

``build`` takes plain values (no Airflow), so it is tested directly; ``tasks.write_run_report``
gathers them from the run and writes the report to S3 and the log.
"""

from __future__ import annotations

from typing import Any

from bisman_ops.run_report import RunReport

PHASES = (
    "preflight",
    "core_infrastructure",
    "read_replica",
    "usage_metering",
    "billing",
    "scheduled_jobs",
    "monitoring",
    "chaos",
    "post_deploy",
)
BUILT_PHASES = ("preflight", "core_infrastructure", "read_replica")
APPROVAL_TASK = "core_infrastructure.approve_plan"
PLAN_TASK = "core_infrastructure.terraform_plan"
OUTPUTS_TASK = "core_infrastructure.terraform_outputs_checked"
STOPPING_STATES = ("failed",)


def gate_id(phase: str) -> str:
    return f"{phase}.{phase}_gate"


def build(
    *,
    dag_id: str,
    run_id: str,
    params: dict[str, Any],
    task_ids: list[str],
    states: dict[str, dict],
    results: dict[str, Any],
    failures: dict[str, Any] | None = None,
) -> RunReport:
    failures = failures or {}
    report = RunReport(
        title=f"BISMAN ERP rollout to {params.get('environment', '?')}",
        dag_id=dag_id,
        run_id=run_id,
        environment=str(params.get("environment", "")),
        reason=f"roll out {params.get('app_image', '?')} to {params.get('domain_name', '?')}",
    )
    begun = results.get("begin_run_report") or {}
    if begun.get("started_at"):
        report.started_at = begun["started_at"]

    def state(task_id: str) -> str:
        return (states.get(task_id) or {}).get("state") or "not run"

    passed = [p for p in PHASES if state(gate_id(p)) == "success"]
    phase_reached = passed[-1] if passed else "none"
    stopped_task = next((t for t in task_ids if state(t) in STOPPING_STATES), None)
    approval = results.get(APPROVAL_TASK) or {}
    rejected = approval.get("chosen_options") == ["Reject"]

    summary = report.section("Summary")
    summary.add("phase reached", phase_reached)
    if stopped_task:
        phase = stopped_task.split(".", 1)[0]
        failure = failures.get(stopped_task) or {}
        message = failure.get("message") or (
            "not built yet: a later issue adds this phase"
            if phase not in BUILT_PHASES
            else "no message recorded; see the task's log"
        )
        summary.add("stopped at", stopped_task).add("stopped because", message)
        if failure.get("measured"):
            summary.add("measured when it stopped", failure["measured"])
        outcome, text = "failed", f"Stopped at {stopped_task} after phase {phase_reached}: {message}"
    elif rejected:
        who = (approval.get("responded_by_user") or {}).get("name", "?")
        summary.add("stopped at", APPROVAL_TASK).add("stopped because", f"plan rejected by {who}")
        outcome, text = "rejected", f"The Terraform plan was rejected by {who}; nothing was applied."
    elif all(state(gate_id(p)) == "success" for p in PHASES):
        outcome, text = "success", "Every phase passed its gate."
    else:
        outcome, text = "failed", f"Run ended after phase {phase_reached} without every gate passing."

    plan = results.get(PLAN_TASK) or {}
    if plan:
        p = plan.get("measured", {})
        section = report.section("Terraform plan")
        section.add("summary", p.get("headline")).add("has changes", plan.get("has_changes"))
        section.add("plan file", p.get("plan")).add("plan SHA-256", plan.get("plan_sha256"))
        if p.get("stateful_at_risk"):
            section.add(
                "stateful resources destroyed or replaced",
                [f"{c['action']} {c['address']}" for c in p["stateful_at_risk"]],
            )
        if not plan.get("has_changes"):
            section.add("approval and apply", "skipped: the plan has no changes")

    if approval:
        user = approval.get("responded_by_user") or {}
        section = report.section("Approvals")
        section.table(
            "Terraform plan approval",
            ["question shown", "plan SHA-256", "answer", "by", "at"],
            [
                [
                    plan.get("approval_subject", "?"),
                    plan.get("plan_sha256", "?"),
                    ", ".join(approval.get("chosen_options") or []),
                    user.get("name") or user.get("id") or "?",
                    str(approval.get("responded_at", "?")),
                ]
            ],
        )

    outputs = (results.get(OUTPUTS_TASK) or {}).get("outputs")
    if outputs:
        report.section("Terraform outputs").table(
            "terraform output -json", ["output", "value"], [[k, v] for k, v in sorted(outputs.items())]
        )

    gates = report.section("Checks and gate measurements")
    rows, timings = [], []
    for task_id in task_ids:
        info = states.get(task_id) or {}
        if task_id in ("write_run_report",):
            continue
        measured = (
            (results.get(task_id) or {}).get("measured") if isinstance(results.get(task_id), dict) else None
        )
        rows.append([task_id, state(task_id), measured if measured is not None else ""])
        if info.get("duration") is not None:
            timings.append([task_id, round(float(info["duration"]), 1)])
    gates.table("Steps in order", ["step", "state", "measured"], rows)
    # A table rather than RunReport.timings: step names like app_secrets_valid would be redacted there.
    report.section("Timings").table("Seconds per step", ["step", "seconds"], timings)
    return report.finish(outcome, text)
