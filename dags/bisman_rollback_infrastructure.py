"""
### Roll back the infrastructure (Terraform revert)

**When:** a Terraform change made things worse and an earlier revision of the configuration was good.
**Changes:** whatever the plan of that revision changes — shown to you, and applied only once you
approve it.

**Runbook**

1. Trigger with the form: environment; `git_ref` (empty: the commit before the current one among
   those touching the Terraform directory); `terraform_dir` (a git work tree); the **reason**.
2. Type the environment name in **confirm**.
3. Under the environment's change lock, `validate_request` checks the ref exists and has a
   Terraform configuration in that directory, and lists the files the revert changes.
4. `checkout_and_plan` exports that revision with `git archive` into a fresh work directory (your
   working tree is never touched), copies the live `terraform.tfvars` (the rollback reverts the
   configuration, not the inputs), runs `init` and `plan -out`. No changes: the run says so and stops.
5. `approve_plan` shows the summary — **destroys or replaces of databases and Redis first** — and
   waits for Approve/Reject (the UI's Required Actions).
6. `apply_approved_plan` applies exactly that saved plan (its sha256 is checked), then
   `verify_outputs_and_health` reads `terraform output -json` (CONTRACT.md's outputs) and checks the
   health endpoints.
7. The lock is released; report (JSON + Markdown) in the state bucket under `reports/<env>/`; the
   team gets the outcome with the reason.

**If apply fails halfway:** the state holds what was applied. Run `terraform plan` in the Terraform
directory to see what remains, fix the cause, then trigger this rollback (or a rollout) again.
**Undo:** trigger again with `git_ref` = the commit the report names as "current".
"""

from __future__ import annotations

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from bisman_ops import params
from bisman_ops.dag_defaults import CHANGE_ARGS, START_DATE

DAG_ID = "bisman_rollback_infrastructure"
TITLE = "Infrastructure rollback (Terraform revert)"
STEP_IDS = [
    "acquire_change_lock",
    "notify_team_of_start",
    "validate_request",
    "checkout_and_plan",
    "plan_has_changes",
    "approve_plan",
    "apply_approved_plan",
    "verify_outputs_and_health",
    "release_change_lock",
]


def describe_request(p: dict) -> str:
    """What the team is told is starting."""
    return (
        f"Terraform configuration of {p['environment']} reverted to "
        f"{p.get('git_ref') or 'the previous commit'}"
    )


@task(task_id="validate_request")
def validate_request() -> dict:
    from bisman_ops.rollback import infrastructure, runtime

    p = runtime.context()["params"]
    with runtime.step("Plan request") as section:
        plan = infrastructure.plan_request(
            environment=p["environment"],
            git_ref=p.get("git_ref"),
            terraform_dir=p["terraform_dir"],
            confirm=p.get("confirm"),
        )
        section.add("terraform dir", plan.terraform_dir)
        section.add("current commit", plan.current_commit)
        section.add("target commit", f"{plan.target_commit} ({plan.target_subject})")
        section.add("target resolved from", plan.resolved_by)
        section.table("Files the revert changes", ["status", "path"], infrastructure.changed_files(plan))
        return plan.to_dict()


@task(task_id="checkout_and_plan")
def checkout_and_plan(plan: dict) -> dict:
    from bisman_ops.rollback import database, infrastructure, runtime

    ti = runtime.context()["ti"]
    with runtime.step("Terraform plan") as section:
        request = infrastructure.InfraRollbackPlan.from_dict(plan)
        work_dir = infrastructure.work_dir_for(database.run_stamp(ti.run_id))
        config_dir = infrastructure.checkout(request, work_dir)
        result = infrastructure.run_plan(config_dir)
        summary = result["summary"]
        section.add("work dir", str(config_dir))
        section.add("terraform", result["terraform_version"])
        section.add("plan", summary["headline"])
        section.add("plan sha256", result["plan_sha256"])
        section.table(
            "Stateful resources destroyed or replaced",
            ["action", "address"],
            [[c["action"], c["address"]] for c in summary["stateful_at_risk"]],
        )
        section.table(
            "Changes",
            ["action", "address"],
            [[c["action"], c["address"]] for c in summary["resource_changes"]],
        )
        if not result["has_changes"]:
            section.add(
                "no change", "the reverted configuration matches the infrastructure; nothing to apply"
            )
            runtime.hint("no_change")
        body = (
            f"Revert **{request.environment}** to `{request.target_commit[:12]}` "
            f"({request.target_subject}).\n\n{result['markdown']}\n\nReason given: "
            f"{runtime.context()['params']['reason']}"
        )
        return {
            "config_dir": str(config_dir),
            "plan_sha256": result["plan_sha256"],
            "has_changes": result["has_changes"],
            "approval_body": body,
        }


@task.short_circuit(task_id="plan_has_changes", ignore_downstream_trigger_rules=False)
def plan_has_changes(planned: dict) -> bool:
    return bool(planned["has_changes"])


@task(task_id="apply_approved_plan")
def apply_approved_plan(planned: dict) -> dict:
    from pathlib import Path

    from bisman_ops.rollback import infrastructure, runtime

    with runtime.step("Apply") as section:
        runtime.renew_lock()  # the approval may have taken long
        outputs = infrastructure.apply_plan(Path(planned["config_dir"]), planned["plan_sha256"])
        section.add("applied", f"the approved plan (sha256 {planned['plan_sha256'][:12]})")
        return outputs


@task(task_id="verify_outputs_and_health")
def verify_outputs_and_health(outputs: dict) -> None:
    from bisman_ops import app_api
    from bisman_ops.rollback import RollbackFailed, health, runtime
    from bisman_ops.terraform import check_outputs

    with runtime.step("Outputs and health") as section:
        section.table("Outputs", ["name", "value"], [[k, v] for k, v in sorted(outputs.items())])
        problems = check_outputs(outputs)
        if problems:
            raise RollbackFailed(f"the applied configuration's outputs are incomplete: {'; '.join(problems)}")
        section.table("Health", ["path", "status", "ms"], health.check_health(app_api.base_url()))


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=CHANGE_ARGS,
    tags=["bisman", "rollback"],
    doc_md=__doc__,
    params={
        "environment": params.environment(),
        "git_ref": Param(
            None,
            type=["null", "string"],
            pattern=params.GIT_REF_PATTERN,
            title="Git ref",
            description="Commit, tag or branch. Empty: the commit before the current one.",
        ),
        "terraform_dir": params.terraform_dir(),
        "reason": params.reason(),
        "confirm": params.confirm("the environment name"),
    },
) as dag:
    from bisman_ops.rollback import runtime_tasks

    lock, started = runtime_tasks.opening(TITLE, describe_request)
    request = validate_request()
    planned = checkout_and_plan(request)
    approve = ApprovalOperator(
        task_id="approve_plan",
        subject="Apply the Terraform rollback plan?",
        body="{{ ti.xcom_pull(task_ids='checkout_and_plan')['approval_body'] }}",
    )
    outputs = apply_approved_plan(planned)
    verified = verify_outputs_and_health(outputs)
    release, report = runtime_tasks.teardowns(
        lock, TITLE, STEP_IDS, "The earlier revision was applied; outputs and health verified."
    )
    started >> request
    planned >> plan_has_changes(planned) >> approve >> outputs
    verified >> release >> report
