"""Prometheus' and Alertmanager's HTTP APIs through the Airflow HTTP connections ``bisman_prometheus``
and ``bisman_alertmanager`` (``bisman_ops.clients.app_http``: HttpHook, timeouts, bounded retries)."""

from __future__ import annotations

from typing import Any

from bisman_ops import config

TIMEOUT_S = 10


class ApiError(RuntimeError):
    pass


def _get(conn_id: str, path: str, params: dict | None = None) -> Any:
    from bisman_ops.clients import app_http

    r = app_http.request("GET", path, conn_id=conn_id, params=params, timeout=TIMEOUT_S)
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200 and not (isinstance(body, dict) and body.get("status") == "error"):
        raise ApiError(f"GET {path} on {conn_id}: HTTP {r.status_code} {r.text[:300]}")
    return body


def query(expr: str, conn_id: str = config.PROMETHEUS_CONN_ID) -> dict[str, Any]:
    """An instant query: ``{"ok", "series", "error"}`` (``error`` is Prometheus' parse/eval message)."""
    body = _get(conn_id, "/api/v1/query", {"query": expr})
    if body.get("status") != "success":
        return {"ok": False, "series": 0, "error": f"{body.get('errorType')}: {body.get('error')}"}
    result = body["data"]["result"]
    series = len(result) if isinstance(result, list) else 1
    return {"ok": True, "series": series, "error": None}


def rule_groups(conn_id: str = config.PROMETHEUS_CONN_ID) -> list[dict[str, Any]]:
    return _get(conn_id, "/api/v1/rules")["data"]["groups"]


def runtime_info(conn_id: str = config.PROMETHEUS_CONN_ID) -> dict[str, Any]:
    """``reloadConfigSuccess`` and ``lastConfigTime`` tell whether the last reload took."""
    return _get(conn_id, "/api/v1/status/runtimeinfo")["data"]


def firing_alerts(conn_id: str = config.PROMETHEUS_CONN_ID) -> list[dict[str, Any]]:
    return [a for a in _get(conn_id, "/api/v1/alerts")["data"]["alerts"] if a.get("state") == "firing"]


def global_interval(conn_id: str = config.PROMETHEUS_CONN_ID) -> dict[str, float]:
    """The configured scrape and evaluation intervals (s), from the running config."""
    import yaml

    loaded = yaml.safe_load(_get(conn_id, "/api/v1/status/config")["data"]["yaml"]) or {}
    g = loaded.get("global") or {}
    return {
        "scrape_s": seconds(g.get("scrape_interval", "1m")),
        "evaluation_s": seconds(g.get("evaluation_interval", "1m")),
    }


def alertmanager_alerts(alertname: str, conn_id: str = config.ALERTMANAGER_CONN_ID) -> list[dict[str, Any]]:
    return _get(conn_id, "/api/v2/alerts", {"filter": f'alertname="{alertname}"', "active": "true"})


def alertmanager_route_timing(
    alertname: str = "", conn_id: str = config.ALERTMANAGER_CONN_ID
) -> dict[str, float]:
    """group_wait, group_interval and repeat_interval (s) of the route ``alertname`` takes in the
    running Alertmanager config: a first-level route matching it by name, else the root route."""
    import yaml

    original = _get(conn_id, "/api/v2/status")["config"]["original"]
    root = (yaml.safe_load(original) or {}).get("route") or {}
    route = dict(root)
    for child in root.get("routes") or []:
        names = [
            m.split("=", 1)[1].strip('"') for m in child.get("matchers") or [] if m.startswith("alertname=")
        ]
        if alertname in names or (child.get("match") or {}).get("alertname") == alertname:
            route.update(child)
            break
    return {
        "group_wait_s": seconds(route.get("group_wait", "30s")),
        "group_interval_s": seconds(route.get("group_interval", "5m")),
        "repeat_interval_s": seconds(route.get("repeat_interval", "4h")),
    }


def alertmanager_notifications(conn_id: str = config.ALERTMANAGER_CONN_ID) -> dict[str, dict[str, float]]:
    """Alertmanager's own counters: notifications attempted and failed, by integration."""
    from bisman_ops.clients import app_http

    r = app_http.request("GET", "/metrics", conn_id=conn_id, timeout=TIMEOUT_S)
    if r.status_code != 200:
        raise ApiError(f"GET /metrics on {conn_id}: HTTP {r.status_code}")
    out: dict[str, dict[str, float]] = {}
    for line in r.text.splitlines():
        for name, key in (
            ("alertmanager_notifications_total{", "sent"),
            ("alertmanager_notifications_failed_total{", "failed"),
        ):
            if line.startswith(name) and 'integration="' in line:
                integration = line.split('integration="', 1)[1].split('"', 1)[0]
                out.setdefault(integration, {"sent": 0.0, "failed": 0.0})[key] += float(
                    line.rsplit(" ", 1)[1]
                )
    return out


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def seconds(duration: str | int | float) -> float:
    """Prometheus' duration (``1m30s``, ``5s``, ``500ms``) in seconds."""
    import re

    if isinstance(duration, int | float):
        return float(duration)
    total, text = 0.0, str(duration).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    for number, unit in parts:
        total += float(number) * _UNITS[unit]
    return total
