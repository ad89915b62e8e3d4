"""Phase 9 in the rollout DAG: the checks run only after chaos passed, health first; the security
checks are independent of each other, any failure stops the gate, and the lock and the report
still follow whatever failed."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from tests.rollout.dag_shape import unrun

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "bisman_rollout.py"
HEALTH = "post_deploy.healthy_through_load_balancer"
SECURITY = tuple(f"post_deploy.{t}" for t in ("tls_graded", "waf_active", "security_groups_closed",
                                              "database_not_public", "secrets_not_leaked"))
GATE = "post_deploy.post_deploy_gate"


@pytest.fixture(scope="module")
def dag():
    return runpy.run_path(str(DAG_FILE))["dag"]


def test_nothing_of_post_deploy_runs_when_chaos_failed(dag):
    states = unrun(dag, failed=("chaos.chaos_gate",))
    assert {states[t] for t in (HEALTH, *SECURITY, GATE)} == {"upstream_failed"}
    assert "release_change_lock" not in states and "write_run_report" not in states


def test_an_unhealthy_service_stops_the_security_checks_and_the_gate(dag):
    states = unrun(dag, failed=(HEALTH,))
    assert {states[t] for t in (*SECURITY, GATE)} == {"upstream_failed"}
    assert "release_change_lock" not in states


@pytest.mark.parametrize("check", SECURITY)
def test_a_failed_security_check_stops_the_gate_but_not_the_other_checks(dag, check):
    states = unrun(dag, failed=(check,))
    assert states[GATE] == "upstream_failed"
    assert [t for t in SECURITY if t in states] == [check]
    assert "release_change_lock" not in states and "write_run_report" not in states


def test_the_post_deploy_form_section_bounds_the_health_wait_and_the_log_window(dag):
    assert dag.params.get_param("post_deploy_health_timeout_seconds").schema["section"] == "Post-deploy"
    assert dag.params.get_param("secret_scan_window_minutes").schema["minimum"] == 1
