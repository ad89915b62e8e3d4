"""
### Roll back the infrastructure (Terraform revert)

**When:** a Terraform change made things worse and an earlier revision of the configuration was good.
**Changes:** whatever the plan of that revision changes in the chosen environment — shown to you, and
applied only once you approve it.

**Runbook**

1. Trigger with the form: environment; `git_ref` (empty: the commit before the current one among
   those touching the Terraform directory); `terraform_dir` (a git work tree); the **reason**.
2. Type the environment name in **confirm**.
3. `validate_request` checks the ref exists and has a Terraform configuration in that directory, and
   lists the files the revert changes; only then is the environment's change lock taken and the team
   told what starts.
4. `checkout_and_plan` exports that revision with `git archive` into a clean working directory
   (your working tree is never touched) and plans it with real Terraform against **that
   environment's** state (`<project>/<environment>/terraform.tfstate` in its state bucket, locked in
   its lock table, as the rollout does), with the variables of that environment's last successful
   apply. The plan file and the configuration go to the state bucket with their SHA-256. No changes:
   the run says so and stops.
5. `approve_plan` shows the summary — **destroys or replaces of databases and Redis first** — and
   waits for Approve/Reject (the UI's Required Actions; no answer in time is a Reject).
6. `apply_approved_plan` downloads exactly that plan (any worker), checks both hashes and applies
   it; Terraform itself refuses a plan another apply made stale. `outputs_checked` checks
   CONTRACT.md's outputs, `application_healthy` the health endpoints.
7. The lock is released; report (JSON + Markdown) in the state bucket under `reports/<env>/`; the
   team gets the outcome with the reason.

**State locked by another Terraform run:** the plan fails with Terraform's lock message and the lock
id; nothing changed. Wait for the other run, or `terraform force-unlock <id>` once nothing runs.
**If apply fails halfway:** the state holds what was applied. Trigger this rollback again: its new
plan shows what remains. **Undo:** trigger again with `git_ref` = the commit the report names as
"current".
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, chain, task

from bisman_ops import params
from bisman_ops.change import lock, report
from bisman_ops.change.approval import ChangeApproval
from bisman_ops.change.step import Result, context, step
from bisman_ops.dag_defaults import CHANGE_ARGS, CHANGE_DAGRUN_TIMEOUT, START_DATE
from bisman_ops.rollback import steps

DAG_ID = "bisman_rollback_infrastructure"
TITLE = "Infrastructure rollback (Terraform revert)"
# Shorter than the change lock's lease: nothing renews the lease while the approval waits.
APPROVAL_TIMEOUT = timedelta(seconds=min(2 * 3600, lock.lease_seconds() / 2))


@step(lease=False)
def validate_request() -> Result:
    """Before the lock is taken or anyone is told: the request is one that can be planned."""
    from bisman_ops.change.report import Section
    from bisman_ops.rollback import infrastructure

    p = context()["params"]
    plan = infrastructure.plan_request(environment=p["environment"], git_ref=p.get("git_ref"),
                                       terraform_dir=p["terraform_dir"], confirm=p.get("confirm"))
    section = Section("Plan request")
    section.add("terraform dir", plan.terraform_dir).add("current commit", plan.current_commit)
    section.add("target commit", f"{plan.target_commit} ({plan.target_subject})")
    section.add("target resolved from", plan.resolved_by)
    section.table("Files the revert changes", ["status", "path"], infrastructure.changed_files(plan))
    return Result(value=plan.to_dict(), sections=[section],
                  measured={"target_commit": plan.target_commit, "current_commit": plan.current_commit})


@step
def checkout_and_plan(request: dict) -> Result:
    from bisman_ops.change.report import Section
    from bisman_ops.rollback import infrastructure

    ctx = context()
    plan = infrastructure.InfraRollbackPlan.from_dict(request)
    planned = infrastructure.checkout_and_plan(plan, ctx["ti"].run_id)
    summary = planned["summary"]
    section = Section("Terraform plan")
    section.add("terraform", planned["terraform_version"]).add("state", planned["state"])
    section.add("plan", planned["headline"]).add("plan file", planned["plan_uri"])
    section.add("plan sha256", planned["plan_sha256"])
    section.table("Variables (the environment's last applied inputs)", ["variable", "value"],
                  [[k, v] for k, v in sorted(planned["inputs"].items())])
    section.table("Stateful resources destroyed or replaced", ["action", "address", "type"],
                  [[c["action"], c["address"], c["type"]] for c in summary["stateful_at_risk"]])
    section.table("Changes", ["action", "address", "type"],
                  [[c["action"], c["address"], c["type"]] for c in summary["resource_changes"]])
    if not planned["has_changes"]:
        section.add("no change", "the reverted configuration matches the infrastructure; nothing to apply")
    body = (f"Revert **{plan.environment}** to `{plan.target_commit[:12]}` ({plan.target_subject}).\n\n"
            f"State: `{planned['state']}`\n\n{planned['markdown']}\n\n"
            f"Plan file: `{planned['plan_uri']}` (sha256 `{planned['plan_sha256']}`)\n\n"
            f"Reason given: {ctx['params']['reason']}")
    return Result(value={**planned, "approval_body": body}, sections=[section],
                  hint=None if planned["has_changes"] else "no_change",
                  measured={"plan": planned["headline"], "plan_sha256": planned["plan_sha256"],
                            "state": planned["state"], "has_changes": planned["has_changes"]})


@task.short_circuit(task_id="plan_has_changes", ignore_downstream_trigger_rules=False)
def plan_has_changes(planned: dict) -> bool:
    """No changes: approval and apply are skipped; the teardowns still run."""
    return bool(planned["has_changes"])


@step(changes=True)
def apply_approved_plan(request: dict, planned: dict, answer: dict) -> Result:
    from bisman_ops.change.approval import approved
    from bisman_ops.rollback import infrastructure

    approved(answer, "approve_plan")
    plan = infrastructure.InfraRollbackPlan.from_dict(request)
    result = infrastructure.apply_approved(plan, planned, context()["ti"].run_id)
    return Result(value=result["outputs"],
                  measured={"applied": f"the approved plan (sha256 {planned['plan_sha256'][:12]})",
                            "already_applied": result["already_applied"]})


@step
def outputs_checked(outputs: dict) -> Result:
    from bisman_ops.change.errors import fail_unless
    from bisman_ops.change.report import Section
    from bisman_ops.terraform import check_outputs

    fail_unless(check_outputs(outputs), "Terraform outputs (CONTRACT.md)", "every output present",
                "Add them to the configuration, then trigger again")
    section = Section("Outputs")
    section.table("terraform output -json", ["name", "value"], [[k, v] for k, v in sorted(outputs.items())])
    return Result(value=None, sections=[section], measured={"outputs": len(outputs)})


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    dagrun_timeout=CHANGE_DAGRUN_TIMEOUT,
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
    begin = report.begin_run_report()
    request = validate_request()
    taken = lock.acquire_change_lock(
        note="{{ dag.dag_id }}: {{ params.environment }} to {{ params.git_ref or 'previous commit' }}")
    started = steps.notify_team_of_start(
        what="Terraform configuration of {{ params.environment }} reverted to "
        "{{ params.git_ref or 'the previous commit' }}")
    planned = checkout_and_plan(request)
    approve = ChangeApproval(
        task_id="approve_plan",
        subject="Apply the Terraform rollback plan?",
        body="{{ ti.xcom_pull(task_ids='checkout_and_plan')['approval_body'] }}",
        response_timeout=APPROVAL_TIMEOUT,
    )
    outputs = apply_approved_plan(request, planned, approve.output)
    checked = outputs_checked(outputs)
    healthy = steps.application_healthy()
    release = lock.release_change_lock()
    written = report.write_run_report(TITLE + " in {{ params.environment }}", purpose="{{ params.reason }}",
                                      notify_team=True)
    chain(begin, request, taken, started, planned, plan_has_changes(planned), approve)
    chain(checked, healthy, release.as_teardown(setups=taken), written.as_teardown(setups=begin))
