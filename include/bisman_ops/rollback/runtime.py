"""The Airflow edge the three rollback DAGs share: the change lock as setup/teardown, the start
notice, steps that record their part of the report, and the final report and notification.

A step runs inside ``step(title)``: what it adds to the yielded section goes to XCom, and so does
its error if it fails (a refusal or a failed step is not retried: AirflowFailException). The
``write_report_and_notify`` teardown reads every step's section and error and the run's task
states, decides the outcome, writes the report to S3 and tells the team.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bisman_ops import change_lock
from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollback import RollbackFailed, RollbackRefused, resource_names
from bisman_ops.run_report import RunReport, Section, redact_text, write_report

log = logging.getLogger(__name__)

LEASE_ENV = "BISMAN_CHANGE_LOCK_LEASE_S"
SECTION_KEY = "report_section"
ERROR_KEY = "step_error"
HINT_KEY = "outcome_hint"  # "no_change" or "rejected": what a successful run actually did


def context() -> Any:
    from airflow.sdk import get_current_context

    return get_current_context()


def aws_client(service: str) -> Any:
    from bisman_ops.clients import aws

    return aws.client(service)


def lease_seconds() -> float:
    return float(os.environ.get(LEASE_ENV) or change_lock.DEFAULT_LEASE_SECONDS)


def _owner(ti: Any) -> str:
    return change_lock.owner_for(ti.dag_id, ti.run_id)


def _push_section(ti: Any, section: Section, started: float, error: str | None = None) -> None:
    payload = {
        "title": section.title,
        "values": section.values,
        "tables": [{"title": t.title, "columns": t.columns, "rows": t.rows} for t in section.tables],
        "seconds": round(time.monotonic() - started, 3),
    }
    ti.xcom_push(key=SECTION_KEY, value=_jsonable(payload))
    if error:
        ti.xcom_push(key=ERROR_KEY, value=error)


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


@contextmanager
def step(title: str) -> Iterator[Section]:
    """Run one step: its section goes into the report; a refusal or failure is recorded and ends
    the task without a retry (bad input stays bad; a failed step needs the operator)."""
    from airflow.sdk.exceptions import AirflowFailException

    ti = context()["ti"]
    section = Section(title)
    started = time.monotonic()
    try:
        yield section
    except (RollbackRefused, RollbackFailed, CheckFailed, change_lock.ChangeLockError) as exc:
        message = redact_text(str(exc))
        _push_section(ti, section, started, error=message)
        raise AirflowFailException(message) from None
    except Exception as exc:
        _push_section(ti, section, started, error=redact_text(f"{type(exc).__name__}: {exc}"))
        raise
    _push_section(ti, section, started)


def hint(value: str) -> None:
    context()["ti"].xcom_push(key=HINT_KEY, value=value)


def _new_report(title: str, ctx: Any) -> RunReport:
    ti, p = ctx["ti"], ctx["params"]
    report = RunReport(
        title=title,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        environment=str(p.get("environment", "")),
        reason=str(p.get("reason", "")),
    )
    report.section("Request").values.update({k: v for k, v in p.items() if k != "reason"})
    return report


def _deliver(report: RunReport, event: str, what: str, next_step: str = "") -> str:
    from bisman_ops.notifiers import Notice, deliver

    seen = f"{report.summary or report.error or ''} Reason given: {report.reason}".strip()
    notice = Notice(
        event=event,
        what=what,
        measured=redact_text(seen),
        next_step=next_step,
        environment=report.environment,
    )
    try:
        return ", ".join(deliver(notice))
    except Exception as exc:  # a rollback at 3 a.m. is not stopped by a mail server
        log.warning("notification not delivered: %s", exc)
        return f"not delivered: {redact_text(str(exc))[:300]}"


def _store(report: RunReport) -> str:
    try:
        names = resource_names(report.environment)
        json_key, md_key = write_report(aws_client("s3"), names.state_bucket, names.reports_prefix, report)
        return f"s3://{names.state_bucket}/{json_key} and {md_key}"
    except Exception as exc:
        log.error("report not written: %s", exc)
        return f"not written: {redact_text(str(exc))[:300]}"


def acquire_lock(title: str) -> dict:
    """Setup: take the environment's change lock. Held by another run: write a 'refused' report,
    tell the team, fail without changing anything."""
    from airflow.sdk.exceptions import AirflowFailException

    ctx = context()
    ti, p = ctx["ti"], ctx["params"]
    report = _new_report(title, ctx)
    try:
        with step("Change lock") as section:
            names = resource_names(p["environment"])
            holder = change_lock.acquire(
                aws_client("dynamodb"),
                names.lock_table,
                p["environment"],
                _owner(ti),
                lease_seconds=lease_seconds(),
                note=str(p.get("reason", ""))[:200],
            )
            section.add("acquired", f"{names.lock_table} {change_lock.lock_id(p['environment'])}")
            section.add("lease expires", holder.as_dict()["expires_at"])
            return holder.as_dict()
    except AirflowFailException as exc:
        report.section("Change lock").add("refused", str(exc))
        report.finish("refused", summary=f"{title} refused before any change: {exc}", error=str(exc))
        report.section("Report").add(
            "notified",
            _deliver(
                report, "failed", f"{ti.dag_id} run {ti.run_id} refused", "nothing changed; see the message"
            ),
        )
        log.info("report: %s", _store(report))
        raise


def renew_lock() -> None:
    ctx = context()
    ti, p = ctx["ti"], ctx["params"]
    names = resource_names(p["environment"])
    change_lock.renew(
        aws_client("dynamodb"), names.lock_table, p["environment"], _owner(ti), lease_seconds=lease_seconds()
    )


def release_lock() -> bool:
    """Teardown: release the lock if this run holds it."""
    ctx = context()
    ti, p = ctx["ti"], ctx["params"]
    with step("Change lock released") as section:
        names = resource_names(p["environment"])
        released = change_lock.release(aws_client("dynamodb"), names.lock_table, p["environment"], _owner(ti))
        section.add("released", released)
        return released


def notify_start(title: str, what: str) -> None:
    ctx = context()
    ti = ctx["ti"]
    with step("Start notified") as section:
        report = _new_report(title, ctx)
        report.summary = f"{what}."
        section.add("channels", _deliver(report, "started", f"{ti.dag_id} run {ti.run_id} started: {what}"))


def _task_states(ti: Any) -> dict[str, str]:
    try:
        states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
        return {k: str(v) for k, v in (states.get(ti.run_id) or {}).items()}
    except Exception as exc:  # only refines the outcome; the errors in XCom decide it otherwise
        log.warning("task states unavailable: %s", exc)
        return {}


def write_report_and_notify(title: str, step_ids: list[str], success_summary: str) -> dict:
    """Teardown: assemble the report from every step, decide the outcome, write it to S3 and tell
    the team (success, failure, refusal, nothing to do, or rejected at approval)."""
    ctx = context()
    ti = ctx["ti"]
    report = _new_report(title, ctx)
    states = _task_states(ti)
    errors: list[tuple[str, str]] = []
    hints: list[str] = []
    for task_id in step_ids:
        section = ti.xcom_pull(task_ids=task_id, key=SECTION_KEY)
        if section:
            s = report.section(section["title"])
            s.values.update(section.get("values", {}))
            for t in section.get("tables", []):
                s.table(t["title"], t["columns"], t["rows"])
            report.timing(task_id, float(section.get("seconds", 0)))
        error = ti.xcom_pull(task_ids=task_id, key=ERROR_KEY)
        if error:
            errors.append((task_id, error))
        elif states.get(task_id) == "failed":
            errors.append((task_id, f"{task_id} failed (see its log)"))
        hint_value = ti.xcom_pull(task_ids=task_id, key=HINT_KEY)
        if hint_value:
            hints.append(hint_value)
        if task_id.startswith("approve_"):
            answer = ti.xcom_pull(task_ids=task_id) or {}
            chosen = answer.get("chosen_options") or []
            if chosen:
                report.section("Approval").add(task_id, f"{chosen[0]} by {answer.get('responded_by') or '?'}")
            # A rejected approval succeeds and skips what follows it (its XCom may not survive the
            # resume from awaiting_input, so the states decide when it is missing).
            following = step_ids[step_ids.index(task_id) + 1] if task_id != step_ids[-1] else None
            if "Reject" in chosen or (
                states.get(task_id) == "success" and states.get(following) == "skipped"
            ):
                hints.append("rejected")
    if states:
        report.section("Task states").table(
            "Tasks", ["task", "state"], [[t, states.get(t, "?")] for t in step_ids]
        )
    lock_section = report.section("Change lock released").values
    if errors:
        task_id, message = errors[0]
        refused = task_id in ("validate_request", "acquire_change_lock")
        outcome = "refused" if refused else "failed"
        summary = (
            f"Refused before any change at {task_id}: {message}"
            if refused
            else f"FAILED at {task_id}: {message}. Change lock released: {lock_section.get('released')}."
        )
        report.finish(outcome, summary=summary, error=message)
        event, next_step = (
            "failed",
            (
                "nothing changed; correct the request and trigger again"
                if refused
                else "read the report and the failed task's log; steps before it were done"
            ),
        )
    elif "rejected" in hints:
        report.finish("rejected", summary="Rejected at approval; nothing after the approval was changed.")
        event, next_step = "succeeded", "nothing to do; trigger again when ready"
    elif "no_change" in hints:
        report.finish("no_change", summary="Already on the target: nothing changed.")
        event, next_step = "succeeded", ""
    else:
        report.finish("success", summary=success_summary)
        event, next_step = "succeeded", ""
    where = _store(report)
    channels = _deliver(report, event, f"{ti.dag_id} run {ti.run_id}: {report.outcome.upper()}", next_step)
    log.info("report %s; notified: %s\n%s", where, channels, report.to_markdown())
    return {"outcome": report.outcome, "report": where, "notified": channels}
