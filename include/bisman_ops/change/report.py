"""The run report of a change: what was asked, what each step measured, what changed, who approved,
how long each step took, and how it ended; JSON (for machines) and Markdown (for the operator and
the incident record), written to S3 under the environment's ``reports/`` prefix.

``assemble`` builds it from plain values: the DAG's tasks in declaration order with each one's
state, duration and ``change_record`` (what ``step`` and ``ChangeApproval`` leave in XCom). No
table of task ids: a new task appears in the report by being declared. ``begin_run_report`` and
``write_run_report`` are the setup/teardown pair every change DAG declares.

Everything passes through ``redact`` on the way out: values under keys that name a secret
(password, secret, token, api key, ...) and values that look like one (Stripe keys, webhook
secrets, URLs with a password, bearer tokens, AWS access keys) never reach the report.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bisman_ops.change.redact import REDACTED, is_sensitive_key, redact, redact_text
from bisman_ops.change.step import RECORD_KEY, context, step

__all__ = ["REDACTED", "RunReport", "Section", "Table", "assemble", "is_sensitive_key", "redact",
           "redact_text", "write_report"]

log = logging.getLogger(__name__)

OUTCOMES = ("running", "success", "failed", "refused", "no_change", "rejected")


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Section:
    title: str
    values: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)

    def add(self, key: str, value: Any) -> Section:
        self.values[key] = value
        return self

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> Table:
        t = Table(title, list(columns), [list(r) for r in rows])
        self.tables.append(t)
        return t

    def as_dict(self) -> dict[str, Any]:
        return {"title": self.title, "values": dict(self.values),
                "tables": [{"title": t.title, "columns": t.columns, "rows": t.rows} for t in self.tables]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Section:
        return cls(data["title"], dict(data.get("values", {})),
                   [Table(t["title"], list(t["columns"]), [list(r) for r in t["rows"]])
                    for t in data.get("tables", [])])


@dataclass
class RunReport:
    title: str
    dag_id: str
    run_id: str
    environment: str = ""
    reason: str = ""
    outcome: str = "running"
    summary: str = ""
    error: str | None = None
    started_at: str = field(default_factory=_now_iso)
    finished_at: str | None = None
    sections: list[Section] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def section(self, title: str) -> Section:
        """The section called ``title``, created at the end if new."""
        for s in self.sections:
            if s.title == title:
                return s
        s = Section(title)
        self.sections.append(s)
        return s

    def timing(self, step: str, seconds: float) -> None:
        self.timings[step] = round(self.timings.get(step, 0.0) + seconds, 3)

    @contextmanager
    def timed(self, step: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.timing(step, time.monotonic() - start)

    def finish(self, outcome: str, summary: str = "", error: str | None = None) -> RunReport:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
        self.outcome = outcome
        self.summary = summary or self.summary
        self.error = error
        self.finished_at = _now_iso()
        return self

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return redact(
            {
                "title": self.title,
                "dag_id": self.dag_id,
                "run_id": self.run_id,
                "environment": self.environment,
                "reason": self.reason,
                "outcome": self.outcome,
                "summary": self.summary,
                "error": self.error,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "sections": [
                    {
                        "title": s.title,
                        "values": dict(s.values),
                        "tables": [
                            {
                                "title": t.title,
                                "columns": t.columns,
                                "rows": [_redact_row(t.columns, r) for r in t.rows],
                            }
                            for t in s.tables
                        ],
                    }
                    for s in self.sections
                ],
                "timings": dict(self.timings),
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        sections = [Section.from_dict(s) for s in data.get("sections", [])]
        return cls(
            title=data["title"],
            dag_id=data["dag_id"],
            run_id=data["run_id"],
            environment=data.get("environment", ""),
            reason=data.get("reason", ""),
            outcome=data.get("outcome", "running"),
            summary=data.get("summary", ""),
            error=data.get("error"),
            started_at=data.get("started_at") or _now_iso(),
            finished_at=data.get("finished_at"),
            sections=sections,
            timings=dict(data.get("timings", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, default=str)

    def to_markdown(self) -> str:
        d = self.to_dict()
        lines = [f"# {d['title']}", ""]
        for label, key in (
            ("Outcome", "outcome"),
            ("DAG", "dag_id"),
            ("Run", "run_id"),
            ("Environment", "environment"),
            ("Reason", "reason"),
            ("Started", "started_at"),
            ("Finished", "finished_at"),
        ):
            if d.get(key):
                lines.append(f"- **{label}:** {_md(d[key])}")
        if d["summary"]:
            lines += ["", d["summary"]]
        if d["error"]:
            lines += ["", "## Error", "", "```", str(d["error"]), "```"]
        for s in d["sections"]:
            lines += ["", f"## {s['title']}", ""]
            for k, v in s["values"].items():
                lines.append(f"- **{_md(k)}:** {_md(_scalar(v))}")
            for t in s["tables"]:
                lines += [
                    "",
                    f"**{_md(t['title'])}**",
                    "",
                    "| " + " | ".join(_md(c) for c in t["columns"]) + " |",
                    "|" + "---|" * len(t["columns"]),
                ]
                lines += ["| " + " | ".join(_md(_scalar(c)) for c in row) + " |" for row in t["rows"]]
                if not t["rows"]:
                    lines.append("| " + " | ".join(["(none)"] + [""] * (len(t["columns"]) - 1)) + " |")
        if d["timings"]:
            lines += ["", "## Timings", "", "| step | seconds |", "|---|---|"]
            lines += [f"| {_md(k)} | {v:.1f} |" for k, v in d["timings"].items()]
        return "\n".join(lines) + "\n"


_NAME_COLUMNS = ("name", "variable", "setting", "field")


def _redact_row(columns: list[str], row: list[Any]) -> list[Any]:
    cells = [redact(cell, columns[i] if i < len(columns) else None) for i, cell in enumerate(row)]
    # A name/value table (environment variables): the row's name decides for the cells after it.
    for i, column in enumerate(columns[: len(row)]):
        if column.lower() in _NAME_COLUMNS and isinstance(row[i], str) and is_sensitive_key(row[i]):
            return [c if j <= i or c in (None, "") else REDACTED for j, c in enumerate(cells)]
    return cells


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


def _md(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def report_keys(prefix: str, report: RunReport) -> tuple[str, str]:
    safe_run = re.sub(r"[^A-Za-z0-9._-]+", "_", report.run_id)
    base = f"{prefix.strip('/')}/{report.dag_id}/{safe_run}"
    return f"{base}.json", f"{base}.md"


def write_report(s3_client: Any, bucket: str, prefix: str, report: RunReport) -> tuple[str, str]:
    """Write the report as JSON and Markdown under ``prefix/dag_id/run_id``; returns both keys."""
    json_key, md_key = report_keys(prefix, report)
    s3_client.put_object(
        Bucket=bucket, Key=json_key, Body=report.to_json().encode(), ContentType="application/json"
    )
    s3_client.put_object(
        Bucket=bucket,
        Key=md_key,
        Body=report.to_markdown().encode(),
        ContentType="text/markdown; charset=utf-8",
    )
    return json_key, md_key


# -- assembling the report from the DAG's tasks ----------------------------------------------------

DONE_STATES = ("success", "skipped")


@dataclass
class TaskView:
    """One task of the run as the report sees it."""

    task_id: str
    state: str = "not run"
    duration: float | None = None
    record: dict[str, Any] = field(default_factory=dict)
    is_teardown: bool = False

    @property
    def group(self) -> str | None:
        return self.task_id.split(".", 1)[0] if "." in self.task_id else None


def _who(answer: dict[str, Any]) -> str:
    user = answer.get("responded_by_user") or {}
    if not user:
        return "nobody (timed out: rejected by default)" if answer.get("timed_out") else "?"
    return str(user.get("name") or user.get("id") or "?")


def phase_reached(tasks: list[TaskView]) -> str | None:
    """The last task group, in declaration order, all of whose tasks passed (or were skipped)
    before the first group that did not; None for a DAG without groups."""
    groups: dict[str, list[TaskView]] = {}
    for t in tasks:
        if t.group and not t.is_teardown:
            groups.setdefault(t.group, []).append(t)
    if not groups:
        return None
    reached = "none"
    for name, members in groups.items():
        if not all(t.state in DONE_STATES for t in members):
            break
        reached = name
    return reached


def assemble(*, title: str, reason: str, dag_id: str, run_id: str, params: dict[str, Any],
             tasks: list[TaskView], started_at: str | None = None) -> RunReport:
    """The report of a run from its tasks (in run order: ``in_run_order``), states and records."""
    report = RunReport(title=title, dag_id=dag_id, run_id=run_id,
                       environment=str(params.get("environment", "")), reason=reason)
    if started_at:
        report.started_at = started_at
    report.section("Request").values.update(params)
    summary = report.section("Summary")
    reached = phase_reached(tasks)
    if reached is not None:
        summary.add("phase reached", reached)

    failed = [t for t in tasks if t.state == "failed"]
    stopped = next((t for t in failed if not t.is_teardown), failed[0] if failed else None)
    answers = [(t, t.record["answer"]) for t in tasks if t.record.get("answer")]
    hints = [t.record["hint"] for t in tasks if t.record.get("hint")]
    # A changing step that ran (even one that failed half-way) may have changed the environment.
    changed = any(t.record.get("changed") for t in tasks)
    if stopped is not None:
        failure = stopped.record.get("failure") or {}
        answer = stopped.record.get("answer") or {}
        if answer and not answer.get("approved"):
            who = _who(answer)
            message = f"{answer.get('chosen', 'Reject')} by {who}"
            summary.add("stopped at", stopped.task_id).add("stopped because", message)
            outcome, text = "rejected", f"Rejected at {stopped.task_id} by {who}; nothing after it was done."
        else:
            message = failure.get("message") or "no message recorded; see the task's log"
            summary.add("stopped at", stopped.task_id).add("stopped because", message)
            if failure.get("measured"):
                summary.add("measured when it stopped", failure["measured"])
            outcome = "failed" if changed else "refused"
            after = f" after phase {reached}" if reached is not None else ""
            text = (f"Stopped at {stopped.task_id}{after}: {message}" if changed
                    else f"Refused at {stopped.task_id} before any change: {message}")
    elif "rejected" in hints:
        outcome, text = "rejected", "Rejected at approval; nothing after the approval was changed."
    elif "no_change" in hints:
        outcome, text = "no_change", "Already on the target: nothing changed."
    elif all(t.state in DONE_STATES for t in tasks):
        outcome, text = "success", "Every step passed."
    else:
        outcome, text = "failed", "The run ended without every step passing (see the task states)."

    for t in tasks:
        for s in t.record.get("sections") or []:
            section = report.section(s["title"])
            section.values.update(s.get("values", {}))
            for table in s.get("tables", []):
                section.table(table["title"], table["columns"], table["rows"])
    if answers:
        report.section("Approvals").table(
            "Answers", ["approval", "question shown", "answer", "by", "at"],
            [[t.task_id, a.get("subject", "?"), a.get("chosen", "?"), _who(a), a.get("responded_at", "?")]
             for t, a in answers])
    rows, timings = [], []
    for t in tasks:
        measured = t.record.get("measured")
        rows.append([t.task_id, t.state, measured if measured is not None else ""])
        if t.duration is not None:
            timings.append([t.task_id, round(float(t.duration), 1)])
    report.section("Checks and gate measurements").table("Steps in order", ["step", "state", "measured"],
                                                         rows)
    # A table rather than RunReport.timings: step names like app_secrets_valid would be redacted there.
    report.section("Timings").table("Seconds per step", ["step", "seconds"], timings)
    return report.finish(outcome, text)


def in_run_order(tasks: list[Any]) -> list[Any]:
    """``tasks`` (objects with ``task_id`` and ``upstream_task_ids``) upstream first, declaration
    order among those that are ready together: the order a reader follows the run in."""
    pending = {t.task_id: set(t.upstream_task_ids) for t in tasks}
    ordered: list[Any] = []
    while pending:
        ready = [t for t in tasks if t.task_id in pending and not pending[t.task_id] & pending.keys()]
        if not ready:  # a cycle cannot be declared; keep whatever is left as declared
            ready = [t for t in tasks if t.task_id in pending]
        for t in ready:
            ordered.append(t)
            del pending[t.task_id]
    return ordered


def task_views(ctx: Any) -> list[TaskView]:
    """Every other task of the running DAG run, upstream first, with state and record."""
    ti, dag = ctx["ti"], ctx["dag"]
    crumbs = {b["task_id"]: b for b in ti.get_task_breadcrumbs(ti.dag_id, ti.run_id)}
    views = []
    for task in in_run_order(list(dag.tasks)):
        if task.task_id == ti.task_id:
            continue
        crumb = crumbs.get(task.task_id) or {}
        views.append(TaskView(
            task_id=task.task_id,
            state=str(crumb.get("state") or "not run"),
            duration=crumb.get("duration"),
            record=ti.xcom_pull(task_ids=task.task_id, key=RECORD_KEY) or {},
            is_teardown=bool(getattr(task, "is_teardown", False)),
        ))
    return views


def store(report: RunReport, params: dict[str, Any], s3_client: Any = None) -> dict[str, str]:
    """Write the report to the environment's state bucket; where it went, or why it did not."""
    from bisman_ops.change.lock import names_for

    names = names_for(params)
    try:
        if s3_client is None:
            from bisman_ops.clients import aws

            s3_client = aws.client("s3")
        json_key, md_key = write_report(s3_client, names.state_bucket, names.reports_prefix, report)
    except Exception as exc:  # the log copy stands; say why S3 has none
        log.warning("run report not written to S3 (%s: %s); the log holds the report", type(exc).__name__,
                    redact_text(str(exc))[:300])
        return {"error": type(exc).__name__}
    log.info("run report written to s3://%s/%s and %s", names.state_bucket, json_key, md_key)
    return {"bucket": names.state_bucket, "json_key": json_key, "markdown_key": md_key}


@step(lease=False)
def begin_run_report() -> dict:
    """Setup of the report: always succeeds, so the report is written whatever happens next."""
    return {"started_at": _now_iso()}


@step(lease=False)
def write_run_report(title: str, purpose: str = "", notify_team: bool = False) -> dict:
    """Teardown: assemble the report from every task of the run, write it to the log and S3, and
    (``notify_team``) tell the team the outcome. ``title`` and ``purpose`` (the report's reason line)
    are templated."""
    ctx = context()
    ti = ctx["ti"]
    views = task_views(ctx)
    params = dict(ctx["params"])
    start = getattr(ctx.get("dag_run"), "start_date", None)
    report = assemble(title=title, reason=purpose, dag_id=ti.dag_id, run_id=ti.run_id, params=params,
                      tasks=views, started_at=start.strftime("%Y-%m-%dT%H:%M:%SZ") if start else None)
    log.info("Run report:\n%s", report.to_markdown())
    where = store(report, params)
    measured: dict[str, Any] = {"outcome": report.outcome, **where}
    if notify_team:
        from bisman_ops.change import notify

        measured["notified"] = notify.outcome(report, ctx)
    return measured
