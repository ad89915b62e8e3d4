"""Notifications to the team, by email and Slack.

One notice per event. A change run (rollout, rollback) tells the team how it ended once, from its
report (``outcome``): where it stopped and why; a refused request (nothing changed) only as one
"REFUSED" line in Slack, paging no one. ``TeamNotifier`` (a ``BaseNotifier``) is the recurring DAGs'
``on_failure_callback``: one task, one notice. ``approval_requested`` tells the team an approval
waits, with the link to the task's Required Actions page. The message says what
happened (DAG, task, run), what was seen (the failure's message: our checks put the measured value
in it), and what to do next. Every text goes through ``redact_text``, so a secret in an exception
never reaches a mailbox or a channel.

Both channels are tried; one failing does not stop the other, and a notification that reaches
neither raises ``MessagingError`` (in a callback Airflow logs it; the task's own state stands).
The channels themselves are ``bisman_ops.messaging`` (the SMTP and Slack providers' hooks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from airflow.sdk.bases.notifier import BaseNotifier

from bisman_ops import config

log = logging.getLogger(__name__)

EVENTS = ("failed", "started", "succeeded", "waiting", "refused", "rejected")
_EMOJI = {"failed": ":red_circle:", "started": ":large_blue_circle:", "succeeded": ":large_green_circle:",
          "waiting": ":large_yellow_circle:", "refused": ":white_circle:", "rejected": ":white_circle:"}
CHANNELS = ("email", "slack")
# How a change run's end reaches the team: one notice per run. A refused request changed nothing and
# pages no one (no mail): one line in the team's channel says why; everything else goes to both.
OUTCOME_EVENTS = {"success": "succeeded", "no_change": "succeeded", "failed": "failed",
                  "refused": "refused", "rejected": "rejected", "running": "failed"}
OUTCOME_CHANNELS = {"refused": ("slack",)}
MAX_DETAIL_CHARS = 3000


@dataclass(frozen=True)
class Notice:
    """One notification, channel-independent."""

    event: str  # failed, started, succeeded
    what: str  # "bisman_rollout.read_replica.replica_lag_below_threshold (run manual__...)"
    measured: str  # the failure's message or the value measured
    next_step: str
    environment: str = ""
    link: str = ""

    def subject(self) -> str:
        env = f"[{self.environment}] " if self.environment else ""
        return f"{env}{self.event.upper()}: {self.what}"[:200]

    def text(self) -> str:
        lines = [self.subject(), "", f"What: {self.what}"]
        if self.measured:
            lines.append(f"Seen: {self.measured}")
        if self.next_step:
            lines.append(f"Next: {self.next_step}")
        if self.link:
            lines.append(f"{'Answer' if self.event == 'waiting' else 'Log'}: {self.link}")
        return "\n".join(lines)

    def slack_text(self) -> str:
        return f"{_EMOJI.get(self.event, '')} {self.text()}".strip()


def _clean(text: str) -> str:
    from bisman_ops.change.redact import redact_text

    text = redact_text(str(text).strip())
    return text if len(text) <= MAX_DETAIL_CHARS else text[:MAX_DETAIL_CHARS] + " …"


def notice_from_context(context, *, event: str = "failed", what: str | None = None,
                        measured: str | None = None, next_step: str | None = None) -> Notice:
    """Build a Notice from an Airflow task context (failure callback or running task)."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "") or ""
    task_id = getattr(ti, "task_id", "") or ""
    run_id = getattr(ti, "run_id", "") or ""
    params = context.get("params") or {}
    exception = context.get("exception")
    if what is None:
        what = f"{dag_id}.{task_id} (run {run_id})" if task_id else f"{dag_id} (run {run_id})"
    if measured is None:
        measured = f"{type(exception).__name__}: {exception}" if exception else ""
    if next_step is None and event == "failed":
        next_step = (f"fix the cause named above, then clear {task_id or 'the failed task'} with its "
                     f"downstream tasks in run {run_id} to resume (every step is idempotent)")
    link = ""
    try:
        link = getattr(ti, "log_url", "") or ""
    except Exception:  # log_url needs configuration some contexts lack; the link is optional
        link = ""
    return Notice(event=event, what=_clean(what), measured=_clean(measured or ""),
                  next_step=_clean(next_step or ""), environment=str(params.get("environment", "")),
                  link=link)


def deliver(notice: Notice, *, recipients: list[str] | None = None,
            smtp_conn_id: str = config.SMTP_CONN_ID, slack_conn_id: str = config.SLACK_CONN_ID,
            channels: tuple[str, ...] = CHANNELS) -> list[str]:
    """Send ``notice`` by ``channels`` (email and Slack); return the channels it reached. Raises
    MessagingError when it reached none."""
    from bisman_ops import messaging

    reached, errors = [], []
    if "email" in channels:
        try:
            messaging.send_email(recipients or messaging.team_recipients(), notice.subject(), notice.text(),
                                 conn_id=smtp_conn_id)
            reached.append("email")
        except Exception as exc:  # try Slack anyway
            errors.append(str(exc))
            log.warning("notification email not sent: %s", exc)
    if "slack" in channels:
        try:
            messaging.send_slack(notice.slack_text(), conn_id=slack_conn_id)
            reached.append("slack")
        except Exception as exc:
            errors.append(str(exc))
            log.warning("notification Slack message not sent: %s", exc)
    if not reached:
        raise messaging.MessagingError("notification reached no channel: " + "; ".join(errors))
    return reached


class TeamNotifier(BaseNotifier):
    """Email the team and post to Slack about a task's failure, or a run's start or success.

    ``what``, ``measured`` and ``next_step`` are templated; left None, they come from the context
    (the task, its exception, and "clear the task to resume").
    """

    template_fields = ("what", "measured", "next_step")

    def __init__(self, *, event: str = "failed", what: str | None = None, measured: str | None = None,
                 next_step: str | None = None, recipients: list[str] | None = None,
                 smtp_conn_id: str = config.SMTP_CONN_ID, slack_conn_id: str = config.SLACK_CONN_ID):
        super().__init__()
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        self.event = event
        self.what = what
        self.measured = measured
        self.next_step = next_step
        self.recipients = recipients
        self.smtp_conn_id = smtp_conn_id
        self.slack_conn_id = slack_conn_id

    def notify(self, context) -> None:
        notice = notice_from_context(context, event=self.event, what=self.what, measured=self.measured,
                                     next_step=self.next_step)
        reached = deliver(notice, recipients=self.recipients, smtp_conn_id=self.smtp_conn_id,
                          slack_conn_id=self.slack_conn_id)
        log.info("team notified (%s): %s", ", ".join(reached), notice.subject())


def approval_requested(context, subject: str, link: str) -> list[str]:
    """Tell the team an approval waits for them; the link opens the task's Required Actions."""
    notice = notice_from_context(context, event="waiting", what=subject,
                                 measured="an approval waits in Airflow (Required actions)",
                                 next_step="read the question and answer Approve or Reject; no answer "
                                           "before the timeout rejects")
    return deliver(Notice(**{**notice.__dict__, "link": link}))


def outcome_notice(report) -> tuple[Notice, tuple[str, ...]]:
    """The one notice of a change run's end, and its channels: the outcome names where the run
    stopped (a failure, a refusal or a rejection), so no task sends a notice of its own."""
    event = OUTCOME_EVENTS.get(report.outcome, "failed")
    stopped = report.section("Summary").values.get("stopped at")
    what = f"{report.dag_id} run {report.run_id}"
    if report.outcome == "no_change":
        what += ": no change"
    elif stopped and event != "succeeded":
        what += f" at {stopped}"
    seen = f"{report.summary} {('Reason given: ' + report.reason) if report.reason else ''}".strip()
    next_step = {
        "failed": f"read the report and the log of {stopped or 'the failed task'}; fix the cause, then "
                  "clear it with its downstream tasks to resume (every step is idempotent)",
        "refused": "nothing was changed; correct the request named above and trigger again",
        "rejected": "nothing after the approval was changed",
    }.get(event, "")
    notice = Notice(event=event, what=_clean(what), measured=_clean(seen), environment=report.environment,
                    next_step=next_step)
    return notice, OUTCOME_CHANNELS.get(report.outcome, CHANNELS)


def outcome(report, context) -> str:
    """Tell the team how a run ended (``outcome_notice``); never raises."""
    from bisman_ops.change.redact import redact_text

    notice, channels = outcome_notice(report)
    try:
        return ", ".join(deliver(notice, channels=channels))
    except Exception as exc:  # the outcome stands whatever the mail server does
        log.warning("outcome notification not delivered: %s", exc)
        return f"not delivered: {redact_text(str(exc))[:300]}"
