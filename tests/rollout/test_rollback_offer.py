"""A rollout failing after its apply offers the rollbacks: which failure offers one, the forms it
prefills (accepted by the rollback DAGs' own forms and validations), and where it sits in the DAG."""

from __future__ import annotations

import copy
import re
import runpy
from pathlib import Path

import pytest

from bisman_ops.rollout import rollback_offer as offer
from tests.rollout.dag_shape import unrun

DAGS = Path(__file__).resolve().parents[2] / "dags"
ORDER = ["preflight.preflight_gate", offer.APPLY, "core_infrastructure.core_infrastructure_gate",
         "read_replica.replica_restored", "read_replica.replica_lag_below_threshold",
         "read_replica.read_replica_gate"]
TEARDOWNS = {"read_replica.replica_restored"}
PARAMS = {"environment": "staging", "terraform_dir": "/srv/infra", "project_name": "bisman-erp"}
RUN = "manual__2026-12-06T10:00:00+00:00"


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAGS / "bisman_rollout.py"))["dag"]


def test_a_failure_after_a_successful_apply_or_of_the_apply_itself_is_named_and_nothing_else_offers():
    states = {offer.APPLY: "success", "read_replica.replica_restored": "failed",
              "read_replica.replica_lag_below_threshold": "failed",
              "read_replica.read_replica_gate": "upstream_failed"}
    # The first failed check after the apply, not a teardown that failed before it in run order.
    assert offer.failed_after_apply(states, ORDER, TEARDOWNS) == "read_replica.replica_lag_below_threshold"
    # A failed apply may have applied part of the plan (issue 23 point 5): the apply is named.
    assert offer.failed_after_apply({**states, offer.APPLY: "failed"}, ORDER, TEARDOWNS) == offer.APPLY
    assert offer.failed_after_apply({**states, offer.APPLY: "skipped"}, ORDER, TEARDOWNS) is None  # no change
    refused = {"preflight.preflight_gate": "failed", offer.APPLY: "upstream_failed"}
    assert offer.failed_after_apply(refused, ORDER, TEARDOWNS) is None
    green = {t: "success" for t in ORDER}
    assert offer.failed_after_apply(green, ORDER, TEARDOWNS) is None


def test_the_prefilled_forms_are_valid_for_both_rollback_dags():
    forms = offer.rollback_forms(PARAMS, RUN, "read_replica.read_replica_gate", "bisman-erp-staging-app")
    for dag_file, conf in (("bisman_rollback_application.py", forms["application"]),
                           ("bisman_rollback_infrastructure.py", forms["infrastructure"])):
        rollback_dag = runpy.run_path(str(DAGS / dag_file))["dag"]
        assert set(conf) <= set(rollback_dag.params), dag_file  # no field the form does not have
        form = copy.deepcopy(rollback_dag.params)
        form.update(conf)
        form.validate()  # raises naming a field the form refuses
    assert forms["application"]["confirm"] == "bisman-erp-staging-app"
    assert forms["infrastructure"]["confirm"] == "staging"
    assert RUN in forms["application"]["reason"]
    assert "read_replica.read_replica_gate" in forms["subject"]
    assert "Stop" in forms["body"] and "nobody answers" in forms["body"]


def test_the_prefilled_application_form_passes_the_rollbacks_own_validation(sandbox):
    from bisman_ops.rollback import application
    from bisman_sandbox import aws

    names = aws.names()
    forms = offer.rollback_forms(PARAMS, RUN, "post_deploy.tls_graded", names.ecs_service_name)
    form = forms["application"]
    plan = application.validate_request(aws.client(sandbox, "ecs"), names=names, cluster=None, service=None,
                                        task_definition=form["task_definition"], confirm=form["confirm"])
    assert plan.service == names.ecs_service_name and plan.target.ref != plan.current.ref


def test_a_green_rollout_asks_nothing_and_a_failure_after_the_apply_asks_before_the_report(dag):
    asked = ("choose_rollback", "application_rollback_triggered", "infrastructure_rollback_triggered",
             "rollback_declined")
    green = unrun(dag, skipped=("rollback_offered",))
    assert {green[t] for t in asked} == {"skipped"}
    assert "write_run_report" not in green and "rollback_offer_prepared" not in green
    failed = unrun(dag, failed=("read_replica.replica_lag_below_threshold",))
    assert not set(asked) & set(failed)  # the offer runs, after the lock is released
    assert "release_change_lock" in dag.get_task("rollback_offer_prepared").upstream_task_ids
    assert set(asked[1:]) <= dag.get_task("write_run_report").upstream_task_ids  # the report has the choice


def test_each_option_leads_to_its_own_task_and_stop_is_the_default(dag):
    choice = dag.get_task("choose_rollback")
    assert set(choice.options_mapping) == {offer.APPLICATION, offer.INFRASTRUCTURE, offer.STOP}
    assert set(choice.options_mapping.values()) == choice.downstream_task_ids
    assert choice.defaults == [offer.STOP]
    assert choice.response_timeout.total_seconds() <= 2 * 3600
    for task_id, target in (("application_rollback_triggered", offer.APPLICATION_DAG),
                            ("infrastructure_rollback_triggered", offer.INFRASTRUCTURE_DAG)):
        trigger = dag.get_task(task_id)
        assert trigger.trigger_dag_id == target and trigger.fail_when_dag_is_paused
        assert trigger.wait_for_completion is False  # the rollback runs on its own, linked from here


def test_a_failed_apply_offers_the_rollbacks_saying_part_of_the_plan_may_be_applied():
    forms = offer.rollback_forms(PARAMS, RUN, offer.APPLY, "bisman-erp-staging-app")
    assert forms["subject"] == f"The rollout to staging failed at {offer.APPLY}: roll back?"
    assert "part of the plan may be applied" in forms["body"] and offer.INFRASTRUCTURE in forms["body"]
    assert forms["infrastructure"]["reason"] == f"bisman_rollout run {RUN} failed at {offer.APPLY}"


def answered(option: str, **overrides) -> dict:
    return {"subject": "roll back?", "chosen": option, "approved": False, "timed_out": False,
            "responded_by_user": {"id": "alice", "name": "Alice"}, "responded_at": "2026-12-07T10:00:00Z",
            **overrides}


@pytest.mark.parametrize(("answer", "seen"), [
    (None, "no recorded answer (the choice was marked success by hand"),
    (answered(offer.STOP), f"{offer.STOP} by Alice"),
    (answered(offer.APPLICATION, timed_out=True), "no answer before the approval timed out"),
    (answered(offer.APPLICATION, responded_by_user={}), f"{offer.APPLICATION} by ?"),
])
def test_a_rollback_starts_only_on_a_recorded_choice_of_it_by_a_person(dag, answer, seen):
    """issue 23 point 5: "Mark success" on choose_rollback runs every option's task; without the
    recorded answer of that option none of them starts a rollback (with its confirmation prefilled)."""
    from airflow.sdk.exceptions import AirflowFailException

    trigger = copy.copy(dag.get_task("application_rollback_triggered"))  # the module's DAG stays as declared
    trigger.answer, trigger.offer = answer, {"application": {"environment": "staging"}}
    with pytest.raises(AirflowFailException, match=re.escape(seen)) as refused:
        trigger.execute({})
    assert "nothing was started" in str(refused.value)
    assert trigger.conf != {"environment": "staging"}  # refused before the form was taken


def test_each_trigger_takes_the_choice_and_its_own_option(dag):
    choice = dag.get_task("choose_rollback")
    for task_id, option in (("application_rollback_triggered", offer.APPLICATION),
                            ("infrastructure_rollback_triggered", offer.INFRASTRUCTURE)):
        trigger = dag.get_task(task_id)
        assert trigger.option == option and choice.options_mapping[option] == task_id
        assert trigger.answer.operator is choice  # the recorded answer flows from the choice
        assert trigger.answer.key == "answer"
    from bisman_ops.change.approval import chosen

    assert chosen(answered(offer.APPLICATION), offer.APPLICATION, "choice")["chosen"] == offer.APPLICATION
