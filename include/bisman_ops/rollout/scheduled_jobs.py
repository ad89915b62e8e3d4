"""Phase 5, scheduled jobs: the four recurring DAGs of CONTRACT.md deployed on the Airflow the
rollout runs on, and a smoke run of each with its effect verified.

On ECS the checklist's jobs are this project's recurring DAGs (CONTRACT.md), so "the jobs are
registered" means: the DAG processor parsed each file without an import error, each DAG's schedule
is the contract's (or the deployment's override in ``DAILY_AGGREGATION_CRON`` etc.), and each is
unpaused. All of it is read through Airflow's REST API (``bisman_ops.clients.airflow_api``, the
``airflow_api`` connection), never by importing the DAG files: what counts is what the deployment
parsed. A paused DAG is unpaused only when the form allows it; otherwise the phase fails naming it.

The smoke runs are triggered and awaited by ``TriggerDagRunOperator`` deferred (no worker slot while
a run goes on); each check after it reads that run (state, failed tasks, its result XCom) and the
effect in the database or S3:

- aggregation: the run's day has ``tenant_usage`` day rows (a test tenant's equal to what was seeded);
- quota alerts: a test tenant past its day quota got exactly one ``quota.alert`` (the mail went out);
- trial expiry: a test tenant whose trial ended is on ``free`` with a ``trial.expired`` event;
- weekly audit: its JSON and Markdown reports were written to S3 by this run.

In prod only the runs nobody outside the team sees are made: the aggregation (idempotent: it
rewrites the same rows) and the audit (its report is rewritten; the team mail goes once a week). No
test tenants, no quota or trial runs. Test tenants (staging) are removed by a teardown.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from airflow.sdk import Param

from bisman_ops import config
from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Result, context, step

DAILY_AGGREGATION = "bisman_daily_usage_aggregation"
TRIAL_EXPIRY = "bisman_trial_expiry"
QUOTA_ALERTS = "bisman_quota_alerts"
WEEKLY_AUDIT = "bisman_weekly_audit"
# dag_id -> the environment variable that overrides its contract schedule.
RECURRING_DAGS = {
    DAILY_AGGREGATION: "DAILY_AGGREGATION_CRON",
    TRIAL_EXPIRY: "TRIAL_EXPIRY_CRON",
    QUOTA_ALERTS: "QUOTA_ALERT_CRON",
    WEEKLY_AUDIT: "WEEKLY_AUDIT_CRON",
}
SMOKE_RUN_PREFIX = "rollout_smoke__"
SMOKE_RUN_ID = SMOKE_RUN_PREFIX + "{{ run_id }}"
SMOKE_POLL_S = 10
SMOKE_TIMEOUT = timedelta(minutes=45)  # the slowest job's run bound is longer, but a smoke run is small
SMOKE_SLUG_PREFIX = "rollout-smoke-"
SMOKE_ID_BASE = 9_100_000_000_000  # above the usage phase's test range (9_000_000_000_000 + 1e9)
SMOKE_EMAIL_DOMAIN = "rollout-smoke.bisman.test"
SMOKE_DAY_QUOTA = 10
SMOKE_OVER_QUOTA_USAGE = 15  # 150% of the day quota: one 100% alert, no stale 80% one
SMOKE_SEEDED_USAGE = (3, 5)  # api_calls on the two days before today (the run's day is one of them)

PARAMS: dict[str, Param] = {
    "unpause_recurring_dags": Param(False, type="boolean", title="Unpause the recurring DAGs",
                                    description="Unpause any of the four recurring DAGs found paused "
                                                "(otherwise phase 5 fails naming them)."),
}


# -- deployment ----------------------------------------------------------------------------------


def expected_schedules(environ: dict | None = None) -> dict[str, str]:
    """Each recurring DAG's schedule: the deployment's override, else the contract's."""
    from bisman_ops.dag_defaults import cron_from_env

    return {dag_id: cron_from_env(env, environ) for dag_id, env in RECURRING_DAGS.items()}


def _file_of(dag_id: str, error: dict) -> bool:
    return str(error.get("filename", "")).rsplit("/", 1)[-1] == f"{dag_id}.py"


def deployment_state(dags: dict[str, dict | None], import_errors: list[dict],
                     expected: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """What the API shows of each recurring DAG, and what is wrong with it (missing, its file
    failing to import, a schedule other than expected)."""
    measured: dict[str, Any] = {}
    problems: list[str] = []
    for dag_id, want in expected.items():
        dag = dags.get(dag_id)
        errors = [e for e in import_errors if _file_of(dag_id, e) or (dag and e.get("filename") == dag.get(
            "fileloc"))]
        seen = " ".join(str((dag or {}).get("timetable_summary") or "").split())
        measured[dag_id] = {
            "found": dag is not None,
            "schedule": seen or None,
            "expected_schedule": want,
            "is_paused": dag.get("is_paused") if dag else None,
            "import_errors": [str(e.get("stack_trace", ""))[-300:] for e in errors],
        }
        if errors or (dag and dag.get("has_import_errors")):
            last = (errors[0].get("stack_trace") or "").strip().splitlines()[-1:] if errors else []
            problems.append(f"{dag_id}: import error{(' ' + last[0]) if last else ''}")
        if dag is None:
            if not errors:
                problems.append(f"{dag_id}: not deployed (the API does not know it)")
            continue
        if seen != " ".join(want.split()):
            problems.append(f"{dag_id}: schedule {seen or 'none'!r}, expected {want!r}")
    return measured, problems


def paused(deployed: dict[str, Any]) -> list[str]:
    return [dag_id for dag_id, d in deployed.items() if d.get("is_paused")]


def ensure_unpaused(api: Any, deployed: dict[str, Any], allowed: bool) -> dict[str, Any]:
    """Unpause what is paused when ``allowed``, then confirm through the API; otherwise fail naming
    the paused DAGs before anything changes."""
    found = paused(deployed)
    if found and not allowed:
        raise CheckFailed("the recurring DAGs' pause state", f"paused: {', '.join(found)}",
                          "all four unpaused",
                          "Unpause them in the UI (or trigger with unpause_recurring_dags), then clear this "
                          "task", {"paused": found})
    for dag_id in found:
        api.set_paused(dag_id, False)
    still = [dag_id for dag_id in deployed if (api.dag(dag_id) or {}).get("is_paused", True)]
    fail_unless([f"{d} still paused" for d in still], "the recurring DAGs after unpausing", "all unpaused",
                "Check the airflow_api login's permissions, then clear this task", {"paused": still})
    return {"were_paused": found, "unpaused": found, "all_unpaused": True}


# -- smoke runs -------------------------------------------------------------------------------------


def smoke_run_id(rollout_run_id: str) -> str:
    return SMOKE_RUN_PREFIX + rollout_run_id


def smoke_run_outcome(api: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    """The finished smoke run: its state and task states; a run that did not succeed fails the check
    naming the tasks that did not."""
    run = api.dag_run(dag_id, run_id)
    if run is None:
        raise CheckFailed(f"smoke run {run_id} of {dag_id}", "no such run", "a run triggered by this task's "
                          "upstream", "Clear the smoke run task to trigger it again")
    tasks = {t["task_id"]: t["state"] for t in api.task_instances(dag_id, run_id)}
    measured = {"dag_id": dag_id, "run_id": run_id, "state": run["state"], "tasks": tasks,
                "start_date": run.get("start_date"), "end_date": run.get("end_date")}
    if run["state"] != "success":
        bad = [f"{t}={s}" for t, s in tasks.items() if s not in ("success", "skipped")] or ["none"]
        raise CheckFailed(f"smoke run {run_id} of {dag_id}", f"ended {run['state']} (tasks not "
                          f"successful: {', '.join(bad)})", "success",
                          f"Read the failed task's log in {dag_id}, fix the cause, then clear the smoke run "
                          "task with its downstream tasks", measured)
    return measured


# -- test tenants (staging only) ------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeTenants:
    """The ids of the test tenants one rollout run made, and what was seeded for them."""

    tag: str
    usage: int  # usage seeded on the days before today, unlimited quotas
    over_quota: int  # api_calls today past its day quota
    trial_ended: int  # trialing on pro, trial ended two hours ago
    seeded: dict[str, int]  # iso day -> api_calls of the usage tenant

    @property
    def ids(self) -> list[int]:
        return [self.usage, self.over_quota, self.trial_ended]


def smoke_tenant_ids(run_id: str) -> list[int]:
    """The ids of a run's three test tenants: from a range no real tenant uses (tenants.id has no
    sequence), derived from the run so that a retry finds and replaces its own."""
    base = SMOKE_ID_BASE + zlib.crc32(run_id.encode()) % 100_000_000 * 10
    return [base, base + 1, base + 2]


def _tenant(cur: Any, tenant_id: int, tag: str, role: str, plan: str, status: str,
            trial_ends_at: datetime | None) -> int:
    slug = f"{SMOKE_SLUG_PREFIX}{tag}-{role}"
    cur.execute(
        "INSERT INTO tenants (id, slug, name, plan, status, trial_ends_at, billing_email, created_at,"
        " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, now(), now())",
        (tenant_id, slug, f"Rollout smoke test ({role})", plan, status, trial_ends_at,
         f"{slug}@{SMOKE_EMAIL_DOMAIN}"))
    return tenant_id


def create_smoke_tenants(conn: Any, run_id: str, now: datetime | None = None) -> SmokeTenants:
    """Three test tenants, in one transaction (a retry replaces its own first): one with usage for
    the aggregation, one past its day quota, one whose trial ended. Their quotas are overrides, so
    no plan's limits matter."""
    now = now or datetime.now(UTC)
    ids = smoke_tenant_ids(run_id)
    tag = f"{ids[0] % 1_000_000_000:09d}"
    remove_smoke_tenants(conn, ids)
    today = now.astimezone(UTC).date()
    seeded = {(today - timedelta(days=i + 1)).isoformat(): q for i, q in enumerate(SMOKE_SEEDED_USAGE)}
    with conn.transaction(), conn.cursor() as cur:
        usage = _tenant(cur, ids[0], tag, "usage", "pro", "active", None)
        over = _tenant(cur, ids[1], tag, "over-quota", "pro", "active", None)
        trial = _tenant(cur, ids[2], tag, "trial-ended", "pro", "trialing", now - timedelta(hours=2))
        quotas = [(usage, "day", None), (usage, "month", None), (over, "day", SMOKE_DAY_QUOTA),
                  (over, "month", None)]
        cur.executemany("INSERT INTO tenant_quotas (tenant_id, metric, period, quota) "
                        "VALUES (%s, 'api_calls', %s, %s)", quotas)
        rows = [(usage, date.fromisoformat(d), q) for d, q in seeded.items()]
        rows.append((over, today, SMOKE_OVER_QUOTA_USAGE))
        cur.executemany("INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity, "
                        "updated_at) VALUES (%s, %s, 'api_calls', %s, now())", rows)
    return SmokeTenants(tag, usage, over, trial, seeded)


def remove_smoke_tenants(conn: Any, ids: list[int]) -> dict[str, int]:
    """Delete the test tenants and everything written for them (quotas and daily usage cascade)."""
    removed: dict[str, int] = {}
    with conn.transaction(), conn.cursor() as cur:
        for table in ("events", "tenant_usage", "bisman_ops_claims"):
            cur.execute(f"DELETE FROM {table} WHERE tenant_id = ANY(%s)", (ids,))  # fixed names
            removed[table] = cur.rowcount
        cur.execute("DELETE FROM tenants WHERE id = ANY(%s) AND slug LIKE %s", (ids, SMOKE_SLUG_PREFIX + "%"))
        removed["tenants"] = cur.rowcount
    return removed


# -- effects ------------------------------------------------------------------------------------------


def aggregation_effect(conn: Any, result: dict | None, tenants: dict | None) -> dict[str, Any]:
    """The run's day has ``tenant_usage`` day rows for the usage it had; the usage tenant's row
    equals what was seeded for that day (staging)."""
    if not result or not result.get("day"):
        raise CheckFailed(f"{DAILY_AGGREGATION} smoke run's result", f"{result!r}", "the day it aggregated",
                          "Read the run's aggregate_usage_for_day log, then clear the smoke run task")
    day = date.fromisoformat(str(result["day"]))
    usage_rows, day_rows = conn.execute(
        "SELECT (SELECT count(*) FROM client_daily_usage WHERE usage_date = %(d)s),"
        " (SELECT count(*) FROM tenant_usage WHERE period = 'day' AND period_start = %(d)s)",
        {"d": day}).fetchone()
    measured: dict[str, Any] = {"day": day.isoformat(), "client_daily_usage_rows": usage_rows,
                                "tenant_usage_day_rows": day_rows, "result": result}
    problems = []
    if usage_rows and not day_rows:
        problems.append(f"{usage_rows} client_daily_usage rows for {day} but no tenant_usage day rows")
    if tenants:
        want = tenants["seeded"].get(day.isoformat())
        row = conn.execute("SELECT quantity FROM tenant_usage WHERE tenant_id = %s AND metric = 'api_calls' "
                           "AND period = 'day' AND period_start = %s", (tenants["usage"], day)).fetchone()
        measured.update({"test_tenant_seeded": want, "test_tenant_aggregated": row[0] if row else None})
        if want is not None and (row is None or row[0] != want):
            got = row[0] if row else "missing"
            problems.append(f"test tenant {tenants['usage']}: tenant_usage day row {got}, "
                            f"seeded {want} api_calls")
    fail_unless(problems, f"tenant_usage after the {DAILY_AGGREGATION} smoke run",
                "day rows for the aggregated day, equal to the seeded usage",
                "Check the aggregation's SQL against the schema, then clear the smoke run task", measured)
    return measured


def quota_effect(conn: Any, tenants: dict, result: dict | None) -> dict[str, Any]:
    """Exactly one ``quota.alert`` for the over-quota tenant: the 100% one of today's day quota (the
    event is written once its mail went out)."""
    alerts = conn.execute("SELECT payload FROM events WHERE type = 'quota.alert' AND tenant_id = %s",
                          (tenants["over_quota"],)).fetchall()
    payloads = [a[0] for a in alerts]
    measured = {"tenant_id": tenants["over_quota"], "alerts": len(payloads), "payloads": payloads,
                "result": result}
    problems = []
    if len(payloads) != 1:
        problems.append(f"{len(payloads)} quota.alert events for test tenant {tenants['over_quota']} "
                        f"({SMOKE_OVER_QUOTA_USAGE} api_calls against a day quota of {SMOKE_DAY_QUOTA})")
    elif int((payloads[0] or {}).get("threshold", 0)) != 100:
        problems.append(f"the alert was for threshold {payloads[0].get('threshold')}, not 100")
    fail_unless(problems, f"quota alerts after the {QUOTA_ALERTS} smoke run", "exactly one 100% alert",
                "Read the run's send_tenant_alerts log (and the SMTP connection), then clear the smoke run "
                "task",
                measured)
    return measured


def trial_effect(conn: Any, tenants: dict) -> dict[str, Any]:
    tenant_id = tenants["trial_ended"]
    row = conn.execute("SELECT plan, status FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
    events = [r[0] for r in conn.execute(
        "SELECT type FROM events WHERE tenant_id = %s AND type LIKE 'trial.%%'", (tenant_id,)).fetchall()]
    measured = {"tenant_id": tenant_id, "plan": row[0] if row else None, "status": row[1] if row else None,
                "events": events}
    problems = []
    if row is None or row[0] != "free" or row[1] == "trialing":
        problems.append(f"test tenant {tenant_id} is {row[1] if row else 'gone'} on "
                        f"{row[0] if row else '-'} (its trial ended 2 h before the run)")
    if "trial.expired" not in events:
        problems.append(f"no trial.expired event for test tenant {tenant_id} (events: {events or 'none'})")
    fail_unless(problems, f"the ended trial after the {TRIAL_EXPIRY} smoke run",
                "downgraded to free with a trial.expired event",
                "Read the run's end_expired_trials log, then clear the smoke run task", measured)
    return measured


def audit_effect(s3: Any, result: dict | None, since: datetime) -> dict[str, Any]:
    """Both report objects the run names exist and were written since the smoke run started."""
    uris = (result or {}).get("report_uris") or {}
    measured: dict[str, Any] = {"week": (result or {}).get("week"), "reports": {}}
    problems = []
    for name in ("report.json", "report.md"):
        uri = uris.get(name)
        if not uri:
            problems.append(f"the run's result names no {name}")
            continue
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        try:
            head = s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            from bisman_ops.clients.aws import error_code

            problems.append(f"{uri}: {error_code(exc) or type(exc).__name__}")
            continue
        written = head["LastModified"]
        measured["reports"][name] = {"uri": uri, "bytes": head["ContentLength"],
                                     "written": written.isoformat()}
        if written < since - timedelta(seconds=5):  # S3 keeps whole seconds
            problems.append(f"{uri} last written {written.isoformat()}, before the smoke run "
                            f"({since.isoformat()})")
    fail_unless(problems, f"the {WEEKLY_AUDIT} smoke run's report", "report.json and report.md written by it",
                "Read the run's run_weekly_audit log, then clear the smoke run task", measured)
    return measured


# -- the tasks (the DAG's scheduled_jobs group) -------------------------------------------------------


def api() -> Any:
    from bisman_ops.clients.airflow_api import AirflowApi

    return AirflowApi.from_connection()


def _connect() -> Any:
    from bisman_ops.clients import postgres

    return postgres.connect(config.APP_DB_CONN_ID, autocommit=True, application_name="bisman-rollout-jobs")


def _finished_run(dag_id: str) -> tuple[Any, dict[str, Any]]:
    client = api()
    return client, smoke_run_outcome(client, dag_id, smoke_run_id(context()["run_id"]))


def _started(outcome: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(outcome["start_date"]).replace("Z", "+00:00"))


@step
def recurring_dags_deployed() -> Result:
    client = api()
    dags = {dag_id: client.dag(dag_id) for dag_id in RECURRING_DAGS}
    measured, problems = deployment_state(dags, client.import_errors(), expected_schedules())
    fail_unless(problems, "the recurring DAGs on this Airflow (REST API)",
                "each parsed without import errors, on its contract schedule or its override",
                "Fix the DAG file or the schedule variable, wait for the DAG processor, then clear this task",
                measured)
    return Result(value=measured, measured=measured)


@step(changes=True)
def recurring_dags_unpaused(deployed: dict) -> dict:
    return ensure_unpaused(api(), deployed, bool(context()["params"].get("unpause_recurring_dags")))


@step
def smoke_tenants_planned(settings: dict) -> dict | None:
    """Setup: the ids of the run's test tenants (staging; none in prod), recorded before any is
    created, so the teardown removes them whatever ``smoke_tenants_created`` then did."""
    if settings["environment"] == "prod":
        return None
    return {"ids": smoke_tenant_ids(context()["run_id"])}


@step(changes=True)
def smoke_tenants_created(planned: dict | None) -> dict | None:
    """The test tenants and what is seeded for them."""
    if not planned:
        return None
    with _connect() as conn:
        made = create_smoke_tenants(conn, context()["run_id"])
    return {"tag": made.tag, "usage": made.usage, "over_quota": made.over_quota,
            "trial_ended": made.trial_ended, "seeded": made.seeded, "ids": made.ids}


@step(lease=False, changes=True)
def smoke_tenants_removed(planned: dict | None) -> dict:
    """Teardown: whatever happened, the test tenants go. No lease check: cleaning up is right even
    for a run that lost its lock."""
    if not planned:
        return {"removed": "no test tenants"}
    with _connect() as conn:
        return remove_smoke_tenants(conn, list(planned["ids"]))


@step.short_circuit
def customer_visible_smoke_runs_allowed(settings: dict) -> bool:
    """Quota alerts and trial expiry mail and downgrade tenants: smoke-run them outside prod only."""
    return settings["environment"] != "prod"


def smoke_run(task_id: str, dag_id: str) -> Any:
    """Trigger ``dag_id`` and wait for its run deferred (the triggerer watches it; no worker slot).
    The run ending failed does not fail this task: the check after it reads the run and names what
    failed. Cleared, it re-runs the same run id."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    return TriggerDagRunOperator(
        task_id=task_id, trigger_dag_id=dag_id, trigger_run_id=SMOKE_RUN_ID, wait_for_completion=True,
        deferrable=True, poke_interval=SMOKE_POLL_S, allowed_states=["success", "failed"], failed_states=[],
        reset_dag_run=True, execution_timeout=SMOKE_TIMEOUT,
    )


@step
def usage_aggregated_for_a_day(tenants: dict | None) -> dict:
    client, outcome = _finished_run(DAILY_AGGREGATION)
    result = client.xcom(DAILY_AGGREGATION, outcome["run_id"], "aggregate_usage_for_day")
    with _connect() as conn:
        return {**aggregation_effect(conn, result, tenants), "run": outcome}


@step
def quota_alert_sent_once(tenants: dict | None) -> dict:
    client, outcome = _finished_run(QUOTA_ALERTS)
    result = client.xcom(QUOTA_ALERTS, outcome["run_id"], "send_tenant_alerts")
    if not tenants:
        raise CheckFailed("the quota-alert smoke run", "no test tenant", "a test tenant over quota",
                          "This check runs outside prod only; clear smoke_tenants_created")
    with _connect() as conn:
        return {**quota_effect(conn, tenants, result), "run": outcome}


@step
def trial_downgraded(tenants: dict | None) -> dict:
    _, outcome = _finished_run(TRIAL_EXPIRY)
    if not tenants:
        raise CheckFailed("the trial-expiry smoke run", "no test tenant", "a test tenant whose trial ended",
                          "This check runs outside prod only; clear smoke_tenants_created")
    with _connect() as conn:
        return {**trial_effect(conn, tenants), "run": outcome}


@step
def weekly_audit_report_written() -> dict:
    from bisman_ops.clients import aws

    client, outcome = _finished_run(WEEKLY_AUDIT)
    result = client.xcom(WEEKLY_AUDIT, outcome["run_id"], "run_weekly_audit")
    return {**audit_effect(aws.client("s3"), result, _started(outcome)), "run": outcome}


@step(trigger_rule="none_failed_min_one_success")
def scheduled_jobs_gate(deployed: dict, unpaused: dict) -> dict:
    return {"recurring_dags": sorted(deployed), "unpaused_by_rollout": unpaused["unpaused"], "passed": True}


@phase
def scheduled_jobs(settings: Any) -> Phase:
    """The recurring DAGs deployed and unpaused; a smoke run of each on test tenants, its effect
    checked; the test tenants removed whatever happened."""
    from airflow.sdk import chain

    from bisman_ops.change.phase import restore

    deployed = recurring_dags_deployed()
    unpaused = recurring_dags_unpaused(deployed)
    planned = smoke_tenants_planned(settings)
    tenants = smoke_tenants_created(planned)
    customer_visible = customer_visible_smoke_runs_allowed(settings)
    smoke_runs = [
        smoke_run(task_id="daily_usage_aggregation_smoke_run", dag_id=DAILY_AGGREGATION),
        smoke_run(task_id="weekly_audit_smoke_run", dag_id=WEEKLY_AUDIT),
        smoke_run(task_id="quota_alerts_smoke_run", dag_id=QUOTA_ALERTS),
        smoke_run(task_id="trial_expiry_smoke_run", dag_id=TRIAL_EXPIRY),
    ]
    effects = [
        usage_aggregated_for_a_day(tenants),
        weekly_audit_report_written(),
        quota_alert_sent_once(tenants),
        trial_downgraded(tenants),
    ]
    removed = restore(smoke_tenants_removed(planned), intent=planned, damage=tenants)
    gate = scheduled_jobs_gate(deployed, unpaused)
    chain(unpaused, planned)
    chain(tenants, [*smoke_runs[:2], customer_visible])
    customer_visible >> smoke_runs[2:]  # prod: no quota or trial runs (they mail and downgrade tenants)
    chain(smoke_runs, effects)  # each check reads its own run
    chain(effects, removed, gate)
    return Phase(gate=gate, restores=[removed])
