"""One approval operator: its timeout is shorter than the lock's lease, no answer is Reject, and
only a person's Approve passes the check the next task makes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bisman_ops.change.approval import ChangeApproval, answer_from_event, approved
from bisman_ops.change.errors import CheckFailed

AT = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_an_approval_waiting_longer_than_the_lock_lease_is_refused_at_parse_time():
    with pytest.raises(ValueError, match="shorter than the change lock's lease"):
        ChangeApproval(task_id="approve", subject="s", body="b", response_timeout=timedelta(hours=4),
                       lease_seconds=3 * 3600)
    ok = ChangeApproval(task_id="approve", subject="s", body="b", response_timeout=timedelta(hours=2),
                        lease_seconds=3 * 3600)
    assert ok.defaults == ["Reject"] and ok.notifiers


def test_a_persons_approve_passes_and_is_recorded_with_who_answered():
    answer = answer_from_event("Apply?", {"chosen_options": ["Approve"], "responded_at": AT,
                                          "responded_by_user": {"id": "1", "name": "admin"}})
    assert answer["approved"] and answer["responded_at"] == AT.isoformat()
    assert approved(answer)["responded_by_user"]["name"] == "admin"


def test_reject_timeout_and_a_task_marked_success_by_hand_are_not_approvals():
    rejected = answer_from_event("Apply?", {"chosen_options": ["Reject"], "responded_at": AT,
                                            "responded_by_user": {"id": "1", "name": "admin"}})
    timed_out = answer_from_event("Apply?", {"chosen_options": ["Reject"], "responded_at": AT,
                                             "responded_by_user": None, "timedout": True})
    assert not rejected["approved"] and not timed_out["approved"] and timed_out["timed_out"]
    with pytest.raises(CheckFailed, match="Reject by admin"):
        approved(rejected)
    with pytest.raises(CheckFailed, match="timed out"):
        approved(timed_out)
    with pytest.raises(CheckFailed, match="marked success by hand"):
        approved(None)


class RecordingTI:
    """A task instance that keeps its XCom pushes (the branch needs its task and map index)."""

    def __init__(self, task):
        self.task, self.task_id, self.map_index, self.pushed = task, task.task_id, -1, {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def test_a_choice_records_its_answer_before_the_branch_skips_the_other_options():
    """Airflow 3's branch raises DownstreamTasksSkipped to skip the options not chosen, so a value
    returned after it never reaches XCom: the answer the chosen task checks is pushed first."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    from bisman_ops.change.approval import ANSWER_KEY, ChangeChoice

    with DAG("choice_probe", schedule=None):
        choice = ChangeChoice(task_id="choose", question={"subject": "roll back?"}, default="Stop",
                              response_timeout=timedelta(minutes=5),
                              options_mapping={"Roll back": "rolled_back", "Stop": "stopped"})
        choice >> [EmptyOperator(task_id="rolled_back"), EmptyOperator(task_id="stopped")]
    choice.subject = "roll back?"
    ti = RecordingTI(choice)
    event = {"chosen_options": ["Roll back"], "params_input": {}, "responded_at": datetime.now(UTC),
             "responded_by_user": {"id": "alice", "name": "Alice"}}
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        choice.execute_complete({"ti": ti, "task": choice}, event)
    assert list(skipped.value.tasks) == [("stopped", -1)]
    assert ti.pushed[ANSWER_KEY]["chosen"] == "Roll back"
    assert ti.pushed[ANSWER_KEY]["responded_by_user"]["name"] == "Alice"
    assert (choice.answer.operator, choice.answer.key) == (choice, ANSWER_KEY)
