"""A rollout that fails after its Terraform apply offers the matching rollback, and does nothing
without a person's choice.

After the lock is released (a rollback takes it next), ``rollback_offer_prepared`` reads the run's
task states: when ``core_infrastructure.terraform_apply`` succeeded and a later task failed, it names
that task and prepares both rollback forms from the run (environment, target, a reason naming the
failed task and the run). ``choose_rollback`` (a ``ChangeChoice``, the team told with a link) offers
"Roll back the application", "Roll back the infrastructure" or "Stop" (also the answer when nobody
answers); each option leads to its own task, and the two rollbacks are the standard provider's
``TriggerDagRunOperator`` with the prepared form, linked from the task ("Triggered DAG"). The
rollback's own checks then apply: its validation before the lock, its plan approval for Terraform.

The typed confirmation of a rollback form is filled from the choice: a named person chose that
rollback of that environment in Required actions, and the report records who.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

from bisman_ops.change.step import Result, context, step

APPLY = "core_infrastructure.terraform_apply"
APPLICATION = "Roll back the application"
INFRASTRUCTURE = "Roll back the infrastructure"
STOP = "Stop"
APPLICATION_DAG = "bisman_rollback_application"
INFRASTRUCTURE_DAG = "bisman_rollback_infrastructure"


def failed_after_apply(states: dict[str, str], run_order: list[str], teardowns: set[str]) -> str | None:
    """The task to name in the offer: the apply itself when it failed (it may have applied part of
    the plan), else the first task (in run order, teardowns aside) that failed after a successful
    apply; None when the apply never ran (nothing was changed by this rollout) or nothing failed."""
    if APPLY not in run_order or states.get(APPLY) not in ("success", "failed"):
        return None
    if states[APPLY] == "failed":
        return APPLY
    after = run_order[run_order.index(APPLY) + 1:]
    return next((t for t in after if states.get(t) == "failed" and t not in teardowns), None)


def rollback_forms(params: dict[str, Any], run_id: str, failed_task: str,
                   service_name: str) -> dict[str, Any]:
    """Both rollback forms prefilled from the failed run, and the question (``subject``, ``body``)
    that offers them."""
    environment = str(params["environment"])
    reason = f"bisman_rollout run {run_id} failed at {failed_task}"
    return {
        "failed_task": failed_task,
        "application": {"environment": environment, "task_definition": "previous", "reason": reason,
                        "confirm": service_name},
        "infrastructure": {"environment": environment, "git_ref": None, "reason": reason,
                           "terraform_dir": str(params["terraform_dir"]), "confirm": environment},
        # The question choose_rollback asks.
        "subject": f"The rollout to {environment} failed at {failed_task}: roll back?",
        "body": ((f"Run `{run_id}` failed applying its Terraform plan to **{environment}**: part of "
                  "the plan may be applied (the apply's log says what was).\n\n")
                 if failed_task == APPLY else
                 (f"Run `{run_id}` applied its Terraform plan to **{environment}**, then "
                  f"`{failed_task}` failed (its log and the team's notification say why).\n\n")) + (
                 f"- **{APPLICATION}**: `{APPLICATION_DAG}` moves the ECS service `{service_name}` "
                 "back to its previous task definition (validated before its lock is taken).\n"
                 f"- **{INFRASTRUCTURE}**: `{INFRASTRUCTURE_DAG}` plans the Terraform configuration's "
                 f"previous commit in `{params['terraform_dir']}` against {environment}'s state; "
                 "its plan waits for your approval before anything is applied.\n"
                 f"- **{STOP}**: nothing is rolled back (also the answer if nobody answers).\n\n"
                 f"Reason the rollback will record: {reason}"),
    }


@step(lease=False, trigger_rule="all_done")
def rollback_offer_prepared() -> Result:
    """Whether to offer a rollback and what to offer (see the module docstring)."""
    from bisman_ops import config
    from bisman_ops.change.report import in_run_order
    from bisman_ops.naming import ResourceNames

    ctx = context()
    ti, dag, params = ctx["ti"], ctx["dag"], ctx["params"]
    states = {b["task_id"]: str(b.get("state")) for b in ti.get_task_breadcrumbs(ti.dag_id, ti.run_id)}
    order = [t.task_id for t in in_run_order(list(dag.tasks))]
    teardowns = {t.task_id for t in dag.tasks if getattr(t, "is_teardown", False)}
    failed = failed_after_apply(states, order, teardowns)
    if failed is None:
        return Result(value={"failed_task": None},
                      measured={"offered": False, "apply": states.get(APPLY, "not run")})
    names = ResourceNames(config.project_name(params.get("project_name")), str(params["environment"]))
    forms = rollback_forms(dict(params), ti.run_id, failed, names.ecs_service_name)
    return Result(value=forms, measured={"offered": True, "failed_task": failed})


@step.short_circuit(lease=False)
def rollback_offered(offer: dict) -> bool:
    """Nothing failed after an apply: no question, every rollback task skipped."""
    return bool(offer.get("failed_task"))


class RollbackTriggered(TriggerDagRunOperator):
    """The standard provider's trigger, its conf the ``form`` of ``offer`` (an XComArg of
    ``rollback_offer_prepared``), started only when ``answer`` (the XComArg of ``choose_rollback``)
    records a person choosing ``option``: a choice marked "success" by hand runs every option's
    task, and none of them may start a rollback with its confirmation prefilled. The triggered run
    is linked from the task ("Triggered DAG"), and a paused rollback DAG fails it, naming the DAG."""

    template_fields = (*TriggerDagRunOperator.template_fields, "offer", "answer")

    def __init__(self, *, offer: Any, form: str, answer: Any, option: str, **kwargs: Any) -> None:
        kwargs.setdefault("fail_when_dag_is_paused", True)
        kwargs.setdefault("openlineage_inject_parent_info", False)  # the rollback's form as prepared
        super().__init__(**kwargs)
        self.offer, self.form, self.answer, self.option = offer, form, answer, option

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowFailException

        from bisman_ops.change.approval import chosen
        from bisman_ops.change.errors import CheckFailed

        try:
            chosen(self.answer, self.option, f"{self.task_id}: the choice of {self.option!r}")
        except CheckFailed as exc:
            raise AirflowFailException(exc.message()) from None
        self.conf = dict(self.offer[self.form])
        return super().execute(context)


@step(lease=False)
def rollback_declined(offer: dict) -> dict:
    """The operator chose to stop (or nobody answered): nothing is rolled back."""
    return {"rolled_back": False, "failed_task": offer.get("failed_task")}
