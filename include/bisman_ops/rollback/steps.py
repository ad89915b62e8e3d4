"""Tasks every rollback DAG shares, on the change layer: the team told what starts (after the
request was validated and the lock taken), and the application's health waited for."""

from __future__ import annotations

import logging
from datetime import timedelta

from bisman_ops import config
from bisman_ops.change.step import Poke, context, step

log = logging.getLogger(__name__)


@step
def notify_team_of_start(what: str) -> dict:
    """Tell the team (email + Slack) what this run is about to change; a mail server down does not
    stop a rollback."""
    from bisman_ops.change import notify

    ctx = context()
    reason = str(ctx["params"].get("reason", ""))
    notice = notify.notice_from_context(
        ctx,
        event="started",
        what=f"{ctx['ti'].dag_id} run {ctx['ti'].run_id}: {what}",
        measured=f"Reason given: {reason}",
        next_step="",
    )
    try:
        return {"notified": ", ".join(notify.deliver(notice))}
    except Exception as exc:
        log.warning("start notification not delivered: %s", exc)
        return {"notified": f"not delivered ({type(exc).__name__})"}


@step.sensor(poke_interval=timedelta(seconds=5), timeout=timedelta(minutes=5))
def application_healthy() -> Poke:
    """Every health endpoint answers 200 (a switch takes a moment to settle)."""
    from bisman_ops.clients import app_http

    results = app_http.probe_health(config.APP_API_CONN_ID)
    failing = app_http.unhealthy(results)
    measured = {r["path"]: r["status"] for r in results}
    return Poke(not failing, measured, f"health endpoints to answer 200 ({', '.join(failing)})")
