"""The one approval operator of every change DAG, on the standard provider's ``ApprovalOperator``.

``ChangeApproval``:

- renews the change lock's lease, then asks (Airflow's Required Actions) and tells the team by
  email and Slack with a link to the question in the UI;
- waits at most ``response_timeout``, which must be shorter than the lock's lease (nothing renews
  the lease while it waits); no answer by then is ``Reject`` (the defaults);
- records the answer (``chosen``, ``responded_by_user``, ``responded_at``, timed out or not) for the
  run report, whatever it is;
- ends a ``Reject`` (given or by timeout) as a failure that is not retried: the run ends failed,
  the teardowns (lock, report) still run, and the report says "rejected by <who>";
- returns the answer (XCom) when approved.

The task after it takes that answer as an argument and calls ``approved(answer)`` before it
changes anything: a task marked "success" by hand in the UI has no answer, so it is not an
approval.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator
from airflow.sdk.bases.notifier import BaseNotifier

from bisman_ops.change import lock
from bisman_ops.change.errors import CheckFailed

log = logging.getLogger(__name__)

APPROVE = ApprovalOperator.APPROVE
REJECT = ApprovalOperator.REJECT
APPROVAL_TIMEOUT = timedelta(hours=2)  # a change DAG's approvals: shorter than the change lock's 3 h lease
# A deferred task's execution_timeout also ends its wait (Airflow takes the earlier of the two): the
# task's bound is the answer's timeout and a little more, so "no answer" is always the Reject default.
ANSWER_MARGIN = timedelta(minutes=5)


class ApprovalNotifier(BaseNotifier):
    """Email + Slack to the team: an approval waits, with the link to its Required Actions page."""

    def notify(self, context) -> None:
        from bisman_ops.change import notify

        task = context["task"]
        try:
            link = task.generate_link_to_ui_from_context(context=context)
        except Exception as exc:  # no api.base_url configured: the notice still goes, without a link
            log.warning("no link to the approval in the UI: %s", exc)
            link = ""
        try:
            reached = notify.approval_requested(context, task.subject, link)
            log.info("team asked for the approval (%s): %s", ", ".join(reached), link)
        except Exception as exc:  # the question stands in the UI even if no mail went out
            log.warning("approval notification not delivered: %s", exc)


ANSWER_KEY = "answer"  # a ChangeChoice's recorded answer


def answer_from_event(subject: str, event: dict[str, Any]) -> dict[str, Any]:
    """The answer as the report and the next task see it (plain JSON values)."""
    chosen = list(event.get("chosen_options") or [])
    responded_at = event.get("responded_at")
    user = dict(event.get("responded_by_user") or {})
    timed_out = bool(event.get("timedout")) or ("error" in event and event.get("error_type") == "timeout")
    return {
        "subject": subject,
        "chosen": chosen[0] if chosen else REJECT,
        "approved": chosen == [APPROVE] and not timed_out and bool(user),
        "responded_by_user": user,
        "responded_at": responded_at.isoformat() if hasattr(responded_at, "isoformat") else responded_at,
        "timed_out": timed_out,
    }


def describe(answer: dict[str, Any]) -> str:
    if answer.get("timed_out"):
        return "no answer before the approval timed out: rejected by default"
    user = answer.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") or "?"
    return f"{answer.get('chosen')} by {who} at {answer.get('responded_at')}"


def asked(task_id: str, question: Any) -> tuple[str, str]:
    """``subject`` and ``body`` of a question an earlier task prepared; a clear failure without one."""
    if not isinstance(question, dict) or not question.get("subject"):
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{task_id}: no question (subject, body) from the task that prepares it; "
                                   "clear that task, then this one")
    return str(question["subject"]), str(question.get("body", ""))


class ChangeApproval(ApprovalOperator):
    """A human decision in a change DAG (see the module docstring).

    The question is either ``subject`` and ``body`` (templated) or ``question``: a task's result
    (an XComArg in the DAG file) holding ``subject`` and ``body``, so the data flow from the task
    that prepared the decision (e.g. the Terraform plan) is visible where the DAG is declared.
    """

    template_fields = (*ApprovalOperator.template_fields, "question")

    def __init__(self, *, response_timeout: timedelta, subject: str = "", body: str = "",
                 question: Any = None, lease_seconds: float | None = None, **kwargs: Any) -> None:
        lease = lease_seconds if lease_seconds is not None else lock.lease_seconds()
        if response_timeout.total_seconds() >= lease:
            raise ValueError(f"approval {kwargs.get('task_id')}: response_timeout {response_timeout} must be "
                             f"shorter than the change lock's lease ({lease:.0f} s), or the lock expires "
                             "while it waits")
        if not subject and question is None:
            raise ValueError(f"approval {kwargs.get('task_id')}: give subject and body, or question")
        kwargs.setdefault("notifiers", [ApprovalNotifier()])
        kwargs.setdefault("execution_timeout", response_timeout + ANSWER_MARGIN)
        super().__init__(subject=subject or "(the question is prepared by an earlier task)", body=body,
                         response_timeout=response_timeout, defaults=REJECT, **kwargs)
        self.question = question

    def execute(self, context):
        if self.question is not None:
            self.subject, self.body = asked(self.task_id, self.question)
        lock.fence(context)  # the whole response_timeout is covered by the lease from here
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from bisman_ops.change import step

        answer = answer_from_event(self.subject, event)
        step.record(context["ti"], answer=answer, measured={"answer": describe(answer)})
        if not answer["approved"]:
            raise AirflowFailException(f"{self.task_id}: {describe(answer)}; nothing after it is done")
        if "error" not in event:
            super().execute_complete(context, event)  # validates the answer against the options
        lock.fence(context)
        return answer


class ChangeChoice(HITLBranchOperator):
    """A human choice among options, each leading to the task it maps to (``options_mapping``):
    the question comes from an earlier task (``question``: ``subject`` and ``body``), the team is
    told with a link, ``default`` is the answer when nobody answers within ``response_timeout``, and
    the answer (who, what, when) is recorded for the run report like an approval's."""

    template_fields = (*HITLBranchOperator.template_fields, "question")

    def __init__(self, *, question: Any, options_mapping: dict[str, str], default: str,
                 response_timeout: timedelta, **kwargs: Any) -> None:
        kwargs.setdefault("notifiers", [ApprovalNotifier()])
        kwargs.setdefault("execution_timeout", response_timeout + ANSWER_MARGIN)
        super().__init__(subject="(the question is prepared by an earlier task)", body="",
                         options=list(options_mapping), options_mapping=options_mapping, defaults=default,
                         response_timeout=response_timeout, **kwargs)
        self.question = question

    def execute(self, context):
        self.subject, self.body = asked(self.task_id, self.question)
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        from bisman_ops.change import step

        answer = answer_from_event(self.subject, event)
        chosen = list(event.get("chosen_options") or [])
        answer["chosen"] = chosen[0] if chosen else (self.defaults or ["?"])[0]
        step.record(context["ti"], answer=answer, measured={"answer": describe(answer)})
        # Pushed before the branch: skipping the other options' tasks raises (Airflow 3's
        # DownstreamTasksSkipped), so nothing returned after it would reach XCom.
        context["ti"].xcom_push(key=ANSWER_KEY, value=answer)
        return super().execute_complete(context, event)  # skips every option's task but the chosen one's

    @property
    def answer(self) -> Any:
        """The recorded answer (who chose what, when) as an XComArg: the chosen task checks it
        (``chosen``), so one marked "success" by hand (no answer; every option's task runs) starts
        nothing."""
        from airflow.sdk import XComArg

        return XComArg(self, key=ANSWER_KEY)


def chosen(answer: dict[str, Any] | None, option: str, what: str) -> dict[str, Any]:
    """The recorded answer of a ``ChangeChoice``, checked: raises CheckFailed unless a person chose
    ``option`` in Required actions."""
    if not answer or answer.get("chosen") != option or answer.get("timed_out") \
            or not answer.get("responded_by_user"):
        seen = describe(answer) if answer else ("no recorded answer (the choice was marked success by "
                                                "hand, or skipped)")
        raise CheckFailed(what, seen, f"{option!r} chosen by a person in Required actions",
                          "nothing was started; clear the choice task to ask again")
    return answer


def approved(answer: dict[str, Any] | None, what: str = "the approval") -> dict[str, Any]:
    """The recorded answer, checked: raises CheckFailed unless a person approved."""
    if not answer or not answer.get("approved"):
        seen = describe(answer) if answer else ("no recorded answer (the approval task was marked "
                                                "success by hand, or skipped)")
        raise CheckFailed(what, seen, f"{APPROVE} by a person in Required actions",
                          "nothing was changed; clear the approval task to ask again")
    return answer
