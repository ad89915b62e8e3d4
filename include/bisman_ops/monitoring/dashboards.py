"""The tenant, SLA and platform dashboards, built with grafana-foundation-sdk and exported as JSON
(``dashboards/*.json``, what Grafana imports). ``python -m bisman_ops.monitoring.dashboards``
rewrites the export; ``tests/monitoring`` checks that it is current.

Every panel queries the ``datasource`` variable (a Prometheus data source). ``panel_queries``
lists each panel's PromQL with the dashboard's template variables substituted the way Grafana
would for "All" and a one-hour range, so the rollout can run them against the real Prometheus.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

EXPORT_DIR = Path(__file__).resolve().parent / "dashboards"
FOLDER_UID = "bisman-erp"
FOLDER_TITLE = "BISMAN ERP"
APP = 'job="bisman-app"'
RATE = "$__rate_interval"
# How Grafana would substitute them for an instant query over the default range; "All" of a
# regex variable is ".*" (the variables' allValue).
SUBSTITUTIONS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def _sdk():
    from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
    from grafana_foundation_sdk.models import dashboard as model

    return dashboard, prometheus, stat, timeseries, model


def _datasource():
    model = _sdk()[4]
    return model.DataSourceRef(type_val="prometheus", uid="${datasource}")


def _query(expr: str, legend: str = "", ref: str = "A"):
    prometheus = _sdk()[1]
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(_datasource())
    return q.legend_format(legend) if legend else q


def _series(title: str, unit: str, *queries, description: str = ""):
    timeseries = _sdk()[3]
    panel = timeseries.Panel().title(title).unit(unit).datasource(_datasource()).height(8).span(12)
    for q in queries:
        panel = panel.with_target(q)
    return panel.description(description) if description else panel


def _stat(title: str, unit: str, query, description: str = ""):
    stat = _sdk()[2]
    panel = (stat.Panel().title(title).unit(unit).datasource(_datasource()).height(5).span(6)
             .with_target(query))
    return panel.description(description) if description else panel


def _base(uid: str, title: str, description: str):
    dashboard, _, _, _, _model = _sdk()
    return (
        dashboard.Dashboard(title).uid(uid).description(description).tags(["bisman", "generated"])
        .refresh("30s").time("now-1h", "now").timezone("utc").editable()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def _tenant_variable():
    dashboard, _, _, _, model = _sdk()
    return (dashboard.QueryVariable("tenant").label("Tenant").datasource(_datasource())
            .query("label_values(app_tenant_requests_total, tenant_id)")
            .include_all(True).multi(True).all_value(".*")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED))


def tenant_dashboard():
    tenant = 'tenant_id=~"$tenant"'
    return (
        _base("bisman-tenant", "BISMAN ERP / Tenants", "Per-tenant request rate, errors and quota use.")
        .with_variable(_tenant_variable())
        .with_panel(_series("Requests per second by tenant", "reqps", _query(
            f"sum by (tenant_id) (rate(app_tenant_requests_total{{{tenant}}}[{RATE}]))",
            "tenant {{tenant_id}}")))
        .with_panel(_series("Error ratio by tenant (5xx)", "percentunit", _query(
            f"(sum by (tenant_id) (rate(app_tenant_requests_total{{{tenant},status=~\"5..\"}}[{RATE}])) "
            f"or sum by (tenant_id) (rate(app_tenant_requests_total{{{tenant}}}[{RATE}])) * 0) "
            f"/ sum by (tenant_id) (rate(app_tenant_requests_total{{{tenant}}}[{RATE}]))",
            "tenant {{tenant_id}}")))
        .with_panel(_series("Quota use (api_calls) by tenant", "percentunit", _query(
            f"max by (tenant_id, period) (app_tenant_quota_used_ratio{{{tenant}}})",
            "tenant {{tenant_id}} / {{period}}"), description="Usage of the day and month over the quota."))
        .with_panel(_series("Quota rejections (429) per second", "reqps", _query(
            f"sum by (period) (rate(app_quota_rejections_total{{{APP}}}[{RATE}])) "
            f"or sum(rate(http_requests_total{{{APP}}}[{RATE}])) * 0", "{{period}}")))
    )


def sla_dashboard():
    errors = f'sum(rate(http_requests_total{{{APP},status=~"5.."}}[{RATE}]))'
    total = f"sum(rate(http_requests_total{{{APP}}}[{RATE}]))"

    def quantile(q: str) -> str:
        return (f"histogram_quantile({q}, sum by (le) "
                f"(rate(http_request_duration_seconds_bucket{{{APP}}}[{RATE}])))")

    return (
        _base("bisman-sla", "BISMAN ERP / SLA", "Availability, latency, errors, replica lag and Redis.")
        .with_panel(_stat("Availability (non-5xx, range)", "percentunit", _query(
            f'1 - ((sum(increase(http_requests_total{{{APP},status=~"5.."}}[$__range])) or vector(0)) '
            f"/ sum(increase(http_requests_total{{{APP}}}[$__range])))")))
        .with_panel(_stat("Redis master reachable", "bool", _query(f"min(app_redis_up{{{APP}}})")))
        .with_panel(_stat("Read replica lag", "s", _query(f"max(app_database_replica_lag_seconds{{{APP}}})")))
        .with_panel(_stat("Database pools up", "short", _query(
            f"sum by (pool) (app_database_up{{{APP}}})", "{{pool}}")))
        .with_panel(_series("Latency p95 / p99", "s", _query(quantile("0.95"), "p95"),
                            _query(quantile("0.99"), "p99", ref="B")))
        .with_panel(_series("Error ratio (5xx)", "percentunit", _query(f"({errors} or vector(0)) / {total}")))
    )


def platform_dashboard():
    return (
        _base("bisman-platform", "BISMAN ERP / Platform", "Scrape targets, alerting pipeline and traffic.")
        .with_panel(_series("Scrape targets up", "short", _query("up", "{{job}} {{instance}}")))
        .with_panel(_series("Requests per second by route", "reqps", _query(
            f"sum by (route) (rate(http_requests_total{{{APP}}}[{RATE}]))", "{{route}}")))
        .with_panel(_series("Firing alerts", "short", _query(
            'count by (alertname) (ALERTS{alertstate="firing"})', "{{alertname}}")))
        .with_panel(_series("Notifications sent by integration", "short", _query(
            'sum by (integration) (increase(alertmanager_notifications_total{job="alertmanager"}[$__range]))',
            "{{integration}}")))
        .with_panel(_series("Rule evaluation failures", "short", _query(
            "sum(increase(prometheus_rule_evaluation_failures_total[$__range]))")))
    )


DASHBOARDS = {"tenant": tenant_dashboard, "sla": sla_dashboard, "platform": platform_dashboard}


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana's JSON model (plain dicts)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return {name: json.loads(json.dumps(make().build(), cls=JSONEncoder))
            for name, make in DASHBOARDS.items()}


def render(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def export(directory: Path = EXPORT_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in build_all().items():
        path = directory / f"{name}.json"
        path.write_text(render(model))
        written.append(path)
    return written


def load_exported(directory: Path = EXPORT_DIR) -> dict[str, dict[str, Any]]:
    """The exported JSON files (what is imported into Grafana)."""
    return {name: json.loads((directory / f"{name}.json").read_text()) for name in DASHBOARDS}


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in model.get("panels") or []:
        out.append(panel)
        out.extend(panel.get("panels") or [])  # a collapsed row holds its panels
    return [p for p in out if p.get("type") != "row"]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with ``$var``/``${var}`` replaced from ``variables`` (then Grafana's built-ins)."""
    values = {**{k.lstrip("$"): v for k, v in SUBSTITUTIONS.items()}, **variables}

    def one(m: re.Match) -> str:
        if m.group(1) not in values:
            raise ValueError(f"query {expr!r} uses ${m.group(1)}, which has no value to substitute")
        return values[m.group(1)]

    return _VARIABLE.sub(one, expr)


def panel_queries(model: dict[str, Any]) -> list[dict[str, str]]:
    """Each panel target's PromQL, variables substituted ("All" for a query variable)."""
    variables = {}
    for var in (model.get("templating") or {}).get("list") or []:
        if var.get("type") == "query":
            variables[var["name"]] = var.get("allValue") or ".*"
    out = []
    for panel in _panels(model):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                out.append({"dashboard": model.get("title", "?"), "panel": panel.get("title", "?"),
                            "ref": target.get("refId", "A"), "expr": substitute(target["expr"], variables)})
    return out


if __name__ == "__main__":
    for p in export():
        print(p)
    sys.exit(0)
