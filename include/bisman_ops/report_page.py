"""The run report of a change DAG as a page of the Airflow UI (``plugins/bisman_run_reports.py``).

It reads the JSON the run wrote to its environment's state bucket (``change.report``): the outcome
and where it stopped, each phase with its gate and every step's measurement (what was expected, for
a failed one), the approvals (who, when, what was shown), timings, and a link to each task's log.
The page is a tab of the DAG run ("Run report"); its API answers only a user Airflow lets read the
DAG's runs (the session's cookie or a bearer token), and everything shown passes through ``redact``
again (the report was redacted when written).
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import quote

from bisman_ops.change.redact import redact

URL_PREFIX = "/bisman-reports"
STEPS_TITLE = "Checks and gate measurements"
SUMMARY_TITLE = "Summary"
_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2rem;color:#1a202c}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;margin:.3rem 0 1rem;font-size:.9rem}
td,th{border:1px solid #cbd5e0;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#edf2f7}code{font-size:.85rem;white-space:pre-wrap;word-break:break-word}
.outcome{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;font-weight:600}
.success,.no_change{background:#c6f6d5}.failed,.rejected,.refused{background:#fed7d7}
.skipped,.upstream_failed{color:#718096}
"""


def report_key(prefix: str, dag_id: str, run_id: str) -> str:
    from bisman_ops.change.report import RunReport, report_keys

    return report_keys(prefix, RunReport("", dag_id, run_id))[0]


def load(s3: Any, bucket: str, prefix: str, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run's report as written, or None when the run has not written it (yet)."""
    try:
        body = s3.get_object(Bucket=bucket, Key=report_key(prefix, dag_id, run_id))["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return json.loads(body)


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return f"<code>{html.escape(json.dumps(value, default=str, indent=1))}</code>"
    return html.escape("" if value is None else str(value))


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _task_link(ui_base: str, dag_id: str, run_id: str, task_id: str) -> str:
    href = f"{ui_base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id)}/tasks/{quote(task_id)}"
    return f'<a href="{html.escape(href)}" target="_top">{html.escape(task_id)}</a>'


def phases(rows: list[list[Any]]) -> list[tuple[str, list[list[Any]]]]:
    """The steps table's rows grouped by phase (a task group), in run order; the steps outside any
    group (the report, the lock, the rollback offer) last, under "run"."""
    grouped: dict[str, list[list[Any]]] = {}
    for row in rows:
        task_id = str(row[0])
        grouped.setdefault(task_id.split(".", 1)[0] if "." in task_id else "run", []).append(row)
    ungrouped = grouped.pop("run", None)
    return [*grouped.items(), *([("run", ungrouped)] if ungrouped else [])]


def render(report: dict[str, Any], ui_base: str) -> str:
    """The report as one HTML page (every value escaped, secrets redacted)."""
    report = redact(report)
    dag_id, run_id = str(report.get("dag_id", "")), str(report.get("run_id", ""))
    sections = {s["title"]: s for s in report.get("sections", [])}
    outcome = str(report.get("outcome", "?"))
    parts = [f"<h1>{_text(report.get('title'))}</h1>",
             f'<p><span class="outcome {html.escape(outcome)}">{html.escape(outcome)}</span> '
             f"{_text(report.get('summary'))}</p>",
             f"<p>Run <code>{html.escape(run_id)}</code> of <code>{html.escape(dag_id)}</code> in "
             f"<b>{_text(report.get('environment'))}</b>, {_text(report.get('started_at'))} to "
             f"{_text(report.get('finished_at'))}. Reason: {_text(report.get('reason'))}</p>"]
    summary = sections.get(SUMMARY_TITLE, {}).get("values", {})
    if summary:
        parts.append("<h2>Summary</h2>"
                     + _table(["", ""], [[_text(k), _text(v)] for k, v in summary.items()]))
    steps = next(iter(sections.get(STEPS_TITLE, {}).get("tables", [])), None)
    if steps:
        for phase, rows in phases(steps["rows"]):
            gate = next((r for r in rows if str(r[0]).endswith("_gate")), None)
            state = str(gate[1]) if gate else ""
            parts.append(f"<h2>{html.escape(phase)}"
                         + (f' <span class="outcome {html.escape(state)}">gate {html.escape(state)}</span>'
                            if gate else "") + "</h2>")
            parts.append(_table(["step (its log)", "state", "measured"],
                                [[_task_link(ui_base, dag_id, run_id, str(r[0])),
                                  f'<span class="{html.escape(str(r[1]))}">{html.escape(str(r[1]))}</span>',
                                  _text(r[2])] for r in rows]))
    for title, section in sections.items():
        if title in (SUMMARY_TITLE, STEPS_TITLE, "Request"):
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if section.get("values"):
            parts.append(_table(["", ""], [[_text(k), _text(v)] for k, v in section["values"].items()]))
        for table in section.get("tables", []):
            parts.append(f"<p>{html.escape(str(table.get('title', '')))}</p>"
                         + _table(table["columns"], [[_text(c) for c in row] for row in table["rows"]]))
    request = sections.get("Request", {}).get("values", {})
    if request:
        parts.append("<h2>Request (the form)</h2>"
                     + _table(["field", "value"], [[_text(k), _text(v)] for k, v in request.items()]))
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{_text(report.get('title'))}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>")


def not_written(dag_id: str, run_id: str) -> str:
    return ("<!doctype html><html><body><p>No run report for "
            f"<code>{html.escape(dag_id)}</code> run <code>{html.escape(run_id)}</code> yet: a change DAG "
            "writes it when the run ends (<code>write_run_report</code>). Other DAGs write none.</p>"
            "</body></html>")


class LazyApp:
    """An ASGI app built on its first request: every task imports the plugin module (for macros),
    only the API server that serves the page needs its web stack."""

    def __init__(self) -> None:
        self._app = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)


def create_app():
    """The FastAPI app the plugin mounts at ``URL_PREFIX`` inside Airflow's API server."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI
    from fastapi.responses import HTMLResponse

    app = FastAPI(title="BISMAN run reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/dags/{dag_id}/runs/{run_id}", response_class=HTMLResponse,
             dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
    def run_report(dag_id: str, run_id: str) -> HTMLResponse:
        from bisman_ops import params

        conf = _run_conf(dag_id, run_id)
        if conf is None:
            return HTMLResponse(not_written(dag_id, run_id), status_code=404)
        conf.setdefault("environment", params.environment().value)  # the form's default
        found = _load_for(conf, dag_id, run_id)
        if found is None:
            return HTMLResponse(not_written(dag_id, run_id), status_code=404)
        return HTMLResponse(render(found, _ui_base()))

    return app


def _run_conf(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run's form (its environment names the bucket), or None when there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        return None if run is None else dict(run.conf or {})


def _load_for(conf: dict[str, Any], dag_id: str, run_id: str) -> dict[str, Any] | None:
    from bisman_ops.change.lock import names_for
    from bisman_ops.clients import aws

    names = names_for(conf)
    return load(aws.client("s3"), names.state_bucket, names.reports_prefix, dag_id, run_id)


def _ui_base() -> str:
    """Where the UI is (``[api] base_url``); empty: links stay on the host that served the page."""
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="") or ""
