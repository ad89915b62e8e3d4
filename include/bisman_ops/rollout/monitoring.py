"""Phase 6, monitoring and dashboards: dashboards as code imported into Grafana and shown to have
live data, alert rules validated, delivered and loaded, and alerts shown to fire and notify.

- The tenant, SLA and platform dashboards (``bisman_ops.monitoring.dashboards``) must match their
  exported JSON, are imported into the ``BISMAN ERP`` folder through Grafana's HTTP API, and every
  panel's PromQL (variables substituted) must parse and return at least one series from the
  environment's Prometheus. Rendering is not checked: nothing here looks at a drawn panel.
- The rule files (``bisman_ops/monitoring/rules``) pass ``promtool check rules`` and their
  ``promtool test rules`` tests before anything is delivered; every alert routes (``amtool config
  routes test`` on the running Alertmanager's config) to a receiver with email and Slack. They are
  delivered (``RuleDelivery``), Prometheus reloaded, and ``/api/v1/rules`` must show every rule
  with health ok after a successful reload (a broken file keeps the old rules).
- The always-firing Watchdog must reach Alertmanager and both channels; with the threshold drill
  (staging by default) the application is made to answer errors (``AppFault``, switched off by a
  teardown) until ``BismanHighErrorRatio`` fires and is delivered. The waits are reschedule-mode
  sensors whose budget comes from the configured scrape/evaluation intervals, the rule's ``for``
  and Alertmanager's group timings.
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, Result, context, step

CANARY = "Watchdog"
THRESHOLD_ALERT = "BismanHighErrorRatio"
DRILL_REQUESTS_PER_POKE = 40
DRILL_PATH = "/api/usage/quota"
POKE = timedelta(seconds=15)  # still several looks (and drill bursts) in each rule's 1 m rate window
# A failed try of an alert watch is retried soon: the drill's traffic (sent by each look) must not
# stop for longer than the error-ratio rule's 1 m rate window, or its `for` starts over.
ALERT_WATCH = {"poke_interval": POKE, "timeout": timedelta(minutes=30), "retries": 2,
               "retry_delay": timedelta(seconds=10)}
PROBE_REQUESTS_PER_POKE = 20
PANEL_DATA_TIMEOUT = timedelta(minutes=3)  # many scrape intervals of probe traffic
PROBE_TOKEN_TTL_S = 60  # minted again at each look

PARAMS: dict[str, Param] = {
    "alert_threshold_drill": Param(
        None,
        type=["null", "boolean"],
        title="Alert threshold drill",
        description="Make the application answer errors until the error-ratio "
        "alert is delivered. Empty: on for staging, off for prod.",
    ),
    "grafana_overwrite": Param(
        False,
        type="boolean",
        title="Overwrite dashboards changed in Grafana",
        description="Off: a dashboard changed in Grafana since it was read fails "
        "with a 412 version conflict instead of being overwritten.",
    ),
}


# -- logic (plain values) -----------------------------------------------------------------------


def export_drift() -> list[str]:
    """Dashboards whose exported JSON differs from what the code builds."""
    from bisman_ops.monitoring import dashboards

    built, exported = dashboards.build_all(), {}
    for name in built:
        path = dashboards.EXPORT_DIR / f"{name}.json"
        exported[name] = path.read_text() if path.exists() else None
    return [f"{name}.json" for name, model in built.items() if exported[name] != dashboards.render(model)]


def panels_without_data(queries: list[dict[str, str]], run_query: Any) -> tuple[list[dict], list[str]]:
    """Run each panel query; the results, and each panel that failed to parse or returned nothing."""
    results, problems = [], []
    for q in queries:
        answer = run_query(q["expr"])
        results.append({**q, **answer})
        where = f"{q['dashboard']} / {q['panel']} ({q['ref']})"
        if not answer["ok"]:
            problems.append(f"{where}: query does not run: {answer['error']}")
        elif answer["series"] < 1:
            problems.append(f"{where}: no series for {q['expr']}")
    return results, problems


def routing_problems(config_text: str, alerts: list[dict[str, str]], route_receivers: Any) -> list[str]:
    """Each alert (its labels) must route to a receiver that has email and Slack configured."""
    import yaml

    conf = yaml.safe_load(config_text) or {}
    complete = {
        r["name"] for r in conf.get("receivers") or [] if r.get("email_configs") and r.get("slack_configs")
    }
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "alertmanager.yml"
        path.write_text(config_text)
        for labels in alerts:
            got = route_receivers(path, labels)
            receivers = [r.strip() for r in got.stdout.split(",") if r.strip()] if got.ok else []
            if not got.ok:
                problems.append(f"{labels['alertname']}: amtool failed: {got.output[-300:]}")
            elif not set(receivers) & complete:
                problems.append(
                    f"{labels['alertname']} routes to {receivers or 'nothing'}, none of which has "
                    "email and Slack"
                )
    return problems


def alert_labels(files: dict[str, str]) -> list[dict[str, str]]:
    import yaml

    out = []
    for text in files.values():
        for group in (yaml.safe_load(text) or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                if rule.get("alert"):
                    out.append(
                        {
                            "alertname": rule["alert"],
                            **{k: str(v) for k, v in (rule.get("labels") or {}).items()},
                        }
                    )
    return out


def rule_for_s(groups: list[dict[str, Any]], alertname: str) -> tuple[float, float]:
    """The loaded rule's ``for`` and its group's evaluation interval (s)."""
    for group in groups:
        for rule in group.get("rules", []):
            if rule.get("name") == alertname:
                return float(rule.get("duration") or 0), float(group.get("interval") or 60)
    raise CheckFailed(
        f"alert rule {alertname}",
        "not loaded in Prometheus",
        "loaded",
        "Clear rule_files_delivered and its downstream tasks",
    )


# -- tasks: the DAG's monitoring group -------------------------------------------------------------


def _rule_files() -> dict[str, str]:
    from bisman_ops.monitoring import delivery, promtool

    return delivery.read_rule_files(promtool.rule_files())


@step
def dashboards_export_current() -> dict:
    from bisman_ops.monitoring import dashboards

    drift = export_drift()
    fail_unless(
        [f"{d} differs from the code" for d in drift],
        "the exported dashboards",
        "each JSON file as the code builds it",
        "Run python -m bisman_ops.monitoring.dashboards, commit the export, then clear this task",
    )
    return {"dashboards": sorted(dashboards.DASHBOARDS), "current": True}


@step
def rule_files_valid() -> dict:
    from bisman_ops.monitoring import promtool

    files = promtool.rule_files()
    fail_unless(
        promtool.validate(files),
        "the alert rule files",
        "promtool check and its unit tests passing",
        "Fix the named file (nothing was delivered), then clear this task",
    )
    return {"files": [f.name for f in files], "checked": True, "unit_tested": True}


@step
def alerts_route_to_email_and_slack(valid: dict) -> dict:
    from bisman_ops import config
    from bisman_ops.monitoring import prometheus, promtool
    from bisman_ops.monitoring.prometheus import _get

    original = _get(config.ALERTMANAGER_CONN_ID, "/api/v2/status")["config"]["original"]
    alerts = alert_labels(_rule_files())
    fail_unless(
        routing_problems(original, alerts, promtool.route_receivers),
        "Alertmanager's routing of every alert (amtool config routes test)",
        "a receiver with email and Slack for each",
        "Fix the Alertmanager config, then clear this task",
    )
    del prometheus
    return {"alerts": [a["alertname"] for a in alerts], "routed": True}


@step(changes=True)
def rule_files_delivered(valid: dict) -> dict:
    from bisman_ops.monitoring import delivery

    started = time.time()
    done = delivery.rule_delivery().deliver(_rule_files())
    return {**done, "delivered_at": started}


@step.sensor(poke_interval=POKE, timeout=timedelta(minutes=5))
def rules_loaded_and_healthy(delivered: dict) -> Poke:
    from bisman_ops.monitoring import delivery, prometheus

    expected = delivery.expected_rules(_rule_files())
    runtime = prometheus.runtime_info()
    problems = delivery.load_problems(
        expected, prometheus.rule_groups(), runtime, delivered.get("delivered_at")
    )
    measured = {
        "groups": sorted(expected),
        "rules": sum(map(len, expected.values())),
        "reload_success": runtime.get("reloadConfigSuccess"),
        "problems": problems,
        "delivery": delivered.get("error"),
    }
    stale = [p for p in problems if "reload failed" in p or "not reloaded" in p]
    if stale or delivered.get("reloaded") is False:
        raise CheckFailed(
            "the delivered rule files in Prometheus",
            "; ".join(stale or [str(delivered.get("error"))]),
            "reloaded and every rule loaded",
            "Check the rule files in Prometheus' rules directory and its log, then clear "
            "rule_files_delivered",
            measured,
        )
    unknown = [p for p in problems if "health unknown" in p]
    if problems and len(unknown) == len(problems):
        return Poke(False, measured, "rules loaded, waiting for their first evaluation")
    if problems:
        return Poke(False, measured, "; ".join(problems))
    return Poke(True, measured)


@step
def grafana_folder_ready() -> dict:
    from bisman_ops.monitoring import dashboards, grafana

    return grafana.ensure_folder(grafana.api(), dashboards.FOLDER_UID, dashboards.FOLDER_TITLE)


@step(changes=True)
def dashboards_imported(folder: dict) -> Result:
    from bisman_ops.monitoring import dashboards, grafana

    ctx = context()
    g = grafana.api()
    imported = [
        grafana.import_dashboard(
            g,
            model,
            folder["uid"],
            overwrite=bool(ctx["params"].get("grafana_overwrite")),
            message=f"bisman_rollout {ctx['run_id']}",
        )
        for model in dashboards.load_exported().values()
    ]
    return Result(
        value={"dashboards": imported}, measured={"dashboards": imported, "rendering": "not checked"}
    )


@step
def probe_tenant_planned() -> dict:
    """Setup: the run's probe tenant, recorded before it is created, so the teardown removes it
    (with what was metered for it) whatever ``probe_tenant_created`` then did."""
    from bisman_ops.rollout.usage_metering import tenants

    return tenants.probe(context()["run_id"])


@step(changes=True)
def probe_tenant_created(probe: dict) -> dict:
    """A test tenant whose requests give the per-tenant panels live data even where no customer is
    active (a fresh staging)."""
    from bisman_ops.rollout.usage_metering import primary, tenants

    with primary() as conn:
        tenants.create(conn, [probe])
    return probe


@step(lease=False, changes=True)
def probe_tenant_removed(probe: dict) -> dict:
    from bisman_ops.rollout.usage_metering import primary, tenants

    with primary() as conn:
        return tenants.remove(conn, [probe["id"]])


@step.sensor(poke_interval=POKE, timeout=PANEL_DATA_TIMEOUT)
def panels_show_live_data(imported: dict, rules: dict, outputs: dict, probe: dict) -> Poke:
    """Each look first sends the probe tenant's requests: a rate needs traffic in two scrapes."""
    from bisman_ops.clients import app_http
    from bisman_ops.monitoring import dashboards, prometheus
    from bisman_ops.rollout import usage_metering as usage

    token = usage.tenant_token(usage.jwt_secret(outputs), probe["id"], ttl=PROBE_TOKEN_TTL_S)
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(PROBE_REQUESTS_PER_POKE):
        app_http.request("GET", DRILL_PATH, headers=auth, timeout=5, attempts=1)
    queries = [q for model in dashboards.load_exported().values() for q in dashboards.panel_queries(model)]
    results, problems = panels_without_data(queries, prometheus.query)
    measured = {
        "panels_queried": len(results),
        "without_data": problems,
        "rendering": "not checked",
        "series": {f"{r['dashboard']} / {r['panel']} ({r['ref']})": r["series"] for r in results},
    }
    if problems:  # on timeout this is the failure: what to check comes with it
        return Poke(False, measured, "; ".join(problems) + ". Check the metric names against what "
                    "Prometheus scrapes and that the probe's requests reach the application")
    return Poke(True, measured, value={"panels": len(results)})


def _alert_poke(alertname: str, mark: dict, budget_s: float) -> Poke:
    from bisman_ops.monitoring import alerts, prometheus

    seen = alerts.hops(
        alertname,
        prometheus.firing_alerts(),
        prometheus.alertmanager_alerts(alertname),
        alerts.inbox().received(alertname, mark["inbox"]),
    )
    stopped = alerts.where_it_stopped(alertname, seen)
    measured = {"alert": alertname, **seen, "budget_s": budget_s}
    if stopped is None:
        return Poke(True, measured)
    waited = time.time() - mark["started_at"]
    if waited >= budget_s:
        raise CheckFailed(
            f"{alertname} from rule to receivers",
            f"stopped at {stopped}",
            f"firing, in Alertmanager and received by email and Slack within {budget_s:.0f} s "
            "(from the configured intervals)",
            "Fix that hop, then clear this task",
            measured,
        )
    return Poke(False, measured, f"{stopped} ({waited:.0f} s of {budget_s:.0f} s)")


def _mark(alertname: str) -> dict:
    from bisman_ops.monitoring import alerts, prometheus

    intervals = prometheus.global_interval()
    route = prometheus.alertmanager_route_timing(alertname)
    for_s, evaluation_s = rule_for_s(prometheus.rule_groups(), alertname)
    # Only an alert firing before the watch (the canary) needs a repeat to be seen again.
    repeat = route["repeat_interval_s"] if alertname == CANARY else 0.0
    budget = alerts.wait_budget_s(
        for_s, evaluation_s, route["group_wait_s"], route["group_interval_s"], intervals["scrape_s"], repeat
    )
    return {
        "alert": alertname,
        "inbox": alerts.inbox().mark(),
        "started_at": time.time(),
        "budget_s": budget,
        "for_s": for_s,
        "evaluation_s": evaluation_s,
        **route,
        **intervals,
    }


@step
def canary_watch_started(rules: dict) -> dict:
    return _mark(CANARY)


@step.sensor(**ALERT_WATCH)
def canary_alert_delivered(mark: dict) -> Poke:
    return _alert_poke(CANARY, mark, mark["budget_s"])


@step.short_circuit
def threshold_drill_enabled(settings: dict) -> bool:
    drill = context()["params"].get("alert_threshold_drill")
    return bool(drill) if drill is not None else settings["environment"] != "prod"


@step(changes=True)
def app_errors_started(rules: dict) -> dict:
    from bisman_ops.monitoring import alerts

    return {**alerts.app_fault().start(), **_mark(THRESHOLD_ALERT)}


@step.sensor(**ALERT_WATCH)
def error_alert_delivered(mark: dict) -> Poke:
    """Each look sends a burst of requests (answered 500 by the fault) so the ratio stays high."""
    from bisman_ops.clients import app_http

    statuses: dict[str, int] = {}
    for _ in range(DRILL_REQUESTS_PER_POKE):
        code = str(app_http.request("GET", DRILL_PATH, timeout=5, attempts=1).status_code)
        statuses[code] = statuses.get(code, 0) + 1
    poke = _alert_poke(THRESHOLD_ALERT, mark, mark["budget_s"])
    poke.measured["drill_statuses"] = statuses
    return poke


@step(lease=False, changes=True)
def app_errors_stopped() -> dict:
    """Teardown of the drill: the application answers normally again, whatever happened."""
    from bisman_ops.monitoring import alerts

    done = alerts.app_fault().stop()
    fail_unless(
        ["the fault switch is still on"] if done.get("switch_present") else [],
        "the application's fault",
        "switched off",
        "Remove the fault by hand",
    )
    return done


@step(trigger_rule="none_failed_min_one_success")
def monitoring_gate(imported: dict, panels: dict, canary: dict) -> dict:
    return {
        "dashboards": [d["uid"] for d in imported["dashboards"]],
        "panels_with_data": panels["panels"],
        "canary": CANARY,
        "rendering_checked": False,
        "passed": True,
    }


@phase
def monitoring(settings: Any, outputs: Any) -> Phase:
    """Alert rules checked and delivered, dashboards imported with live data, the Watchdog canary
    and a real error-ratio alert delivered by mail and Slack; the fault and the probe tenant
    removed whatever happened."""
    from airflow.sdk import chain

    from bisman_ops.change.phase import intent, restore

    valid = rule_files_valid()
    delivered = rule_files_delivered(valid)
    rules = rules_loaded_and_healthy(delivered)
    folder = grafana_folder_ready()
    imported = dashboards_imported(folder)
    planned_probe = probe_tenant_planned()
    probe = probe_tenant_created(planned_probe)
    panels = panels_show_live_data(imported, rules, outputs, probe)
    probe_removed = restore(probe_tenant_removed(planned_probe), intent=planned_probe, damage=probe)
    canary = canary_alert_delivered(canary_watch_started(rules))
    fault_intended = intent("make the application answer 500, then stop it", task_id="app_errors_intended")
    faulted = app_errors_started(rules)
    error_alert = error_alert_delivered(faulted)
    unfaulted = restore(app_errors_stopped(), intent=fault_intended, damage=faulted)
    gate = monitoring_gate(imported, panels, canary)
    # Nothing is delivered or imported until the files and the routing are shown right.
    chain(dashboards_export_current(), valid, alerts_route_to_email_and_slack(valid), delivered)
    chain(rules, folder)
    chain(imported, planned_probe)
    panels >> probe_removed
    chain(canary, threshold_drill_enabled(settings), fault_intended)
    chain(error_alert, unfaulted, gate)
    return Phase(gate=gate, restores=[probe_removed, unfaulted])
