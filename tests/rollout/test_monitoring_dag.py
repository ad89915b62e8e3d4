"""Phase 6 in the rollout DAG: nothing reaches Prometheus before the rule files passed promtool and
the routes passed amtool; a failed delivery imports no dashboard and fires no alert drill; the
drill's fault and the probe tenant are undone by their teardowns whatever failed."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from tests.rollout.dag_shape import unrun

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollout.py"
GATE = "monitoring.monitoring_gate"
DELIVERED = "monitoring.rule_files_delivered"
AFTER_DELIVERY = tuple(f"monitoring.{t}" for t in (
    "rules_loaded_and_healthy", "grafana_folder_ready", "dashboards_imported", "probe_tenant_created",
    "panels_show_live_data", "canary_watch_started", "canary_alert_delivered", "app_errors_started",
    "error_alert_delivered"))


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


@pytest.mark.parametrize("check", ["monitoring.rule_files_valid",
                                   "monitoring.alerts_route_to_email_and_slack",
                                   "monitoring.dashboards_export_current"])
def test_a_rule_file_or_route_that_fails_its_check_is_never_delivered(dag, check):
    states = unrun(dag, failed=(check,))
    assert states[DELIVERED] == "upstream_failed"
    assert {states[t] for t in (*AFTER_DELIVERY, GATE)} == {"upstream_failed"}
    assert "release_change_lock" not in states and "write_run_report" not in states


def test_the_checks_come_before_the_delivery(dag):
    upstream = dag.get_task(DELIVERED).get_flat_relative_ids(upstream=True)
    assert {"monitoring.rule_files_valid", "monitoring.alerts_route_to_email_and_slack"} <= upstream


def test_a_failed_alert_watch_still_stops_the_fault_and_removes_the_probe_tenant(dag):
    states = unrun(dag, failed=("monitoring.error_alert_delivered", "monitoring.panels_show_live_data"))
    assert "monitoring.app_errors_stopped" not in states  # the teardown runs
    assert "monitoring.probe_tenant_removed" not in states
    assert states[GATE] == "upstream_failed"
    assert "chaos.chaos_gate" in states  # nothing later runs


def test_a_drill_switched_off_skips_the_fault_and_the_gate_still_passes(dag):
    states = unrun(dag, skipped=("monitoring.threshold_drill_enabled",))
    assert states["monitoring.app_errors_started"] == "skipped"
    assert states["monitoring.error_alert_delivered"] == "skipped"
    assert GATE not in states
