"""Prometheus and Alertmanager, with alerts delivered to the real mail and Slack sinks."""

from __future__ import annotations

import uuid

import pytest
import requests
import yaml

from bisman_ops import config
from bisman_sandbox import monitoring, sinks
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import SandboxError, pid_alive, port_open, read_pid, wait_until

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(180)]

PROCESSES = (monitoring.PROMETHEUS, monitoring.ALERTMANAGER)


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    sinks.up(c)
    monitoring.up(c)
    return c


@pytest.fixture
def rule_file(ctx):
    """A rule file path in the rules folder, removed (and Prometheus reloaded) afterwards."""
    path = monitoring.rules_dir(ctx) / f"test-{uuid.uuid4().hex[:8]}.yml"
    yield path
    path.unlink(missing_ok=True)
    monitoring.reload_prometheus(ctx)


def always_firing(alert: str, group: str) -> str:
    return f"""groups:
  - name: {group}
    rules:
      - alert: {alert}
        expr: vector(1) > 0
        labels:
          severity: warning
        annotations:
          summary: sandbox test alert {alert}
"""


def broken(alert: str, group: str) -> str:
    return always_firing(alert, group).replace("vector(1) > 0", "vector(1) >")


def loaded_rules(ctx) -> dict[str, list[str]]:
    return {g["name"]: [r["name"] for r in g["rules"]] for g in monitoring.rule_groups(ctx)}


def api(ctx, service: str, path: str) -> dict:
    resp = requests.get(f"{ctx.url(service)}{path}", timeout=10)
    resp.raise_for_status()
    return resp.json()


def test_prometheus_and_alertmanager_are_ready(ctx):
    assert monitoring.healthy(ctx)
    assert requests.get(f"{ctx.url('prometheus')}/-/healthy", timeout=5).status_code == 200
    assert requests.get(f"{ctx.url('alertmanager')}/-/healthy", timeout=5).status_code == 200


def test_prometheus_scrapes_itself_and_targets_the_app_metrics(ctx):
    def targets() -> dict[str, dict]:
        active = api(ctx, "prometheus", "/api/v1/targets")["data"]["activeTargets"]
        return {t["labels"]["job"]: t for t in active}

    wait_until(lambda: targets()["prometheus"]["health"] == "up", timeout=30, what="self-scrape")
    app = targets()[monitoring.APP_JOB]
    assert app["scrapeUrl"] == f"{ctx.url('app')}/metrics"


def test_prometheus_knows_the_alertmanager(ctx):
    def urls() -> list[str]:
        found = api(ctx, "prometheus", "/api/v1/alertmanagers")["data"]["activeAlertmanagers"]
        return [a["url"] for a in found]

    wait_until(
        lambda: urls() == [f"{ctx.url('alertmanager')}/api/v2/alerts"],
        timeout=30,
        what="Prometheus' alertmanager discovery",
    )


def test_alertmanager_routes_every_alert_to_the_smtp_and_slack_sinks(ctx):
    status = api(ctx, "alertmanager", "/api/v2/status")
    loaded = yaml.safe_load(status["config"]["original"])
    assert loaded["global"]["smtp_smarthost"] == f"127.0.0.1:{ctx.port('smtp')}"
    # issue 23 point 7: STARTTLS before AUTH, the sink's certificate checked against its CA.
    assert loaded["global"]["smtp_require_tls"] is True
    (receiver,) = [r for r in loaded["receivers"] if r["name"] == loaded["route"]["receiver"]]
    assert [c["to"] for c in receiver["email_configs"]] == [config.DEFAULT_TEAM_EMAIL]
    assert [c["tls_config"]["ca_file"] for c in receiver["email_configs"]] == [str(sinks.ca_file(ctx))]
    assert not any(c["tls_config"].get("insecure_skip_verify") for c in receiver["email_configs"])
    assert [c["channel"] for c in receiver["slack_configs"]] == [monitoring.SLACK_CHANNEL]
    # Sub-routes only tune timing (the canary's repeat); none may divert an alert elsewhere.
    assert {r["receiver"] for r in loaded["route"].get("routes", [])} <= {receiver["name"]}
    # No gossip peer port: clustering is off.
    assert status["cluster"]["status"] == "disabled"


def test_connections_point_at_both_http_apis(ctx):
    conns = monitoring.connections(ctx)
    for conn_id, service in ((config.PROMETHEUS_CONN_ID, "prometheus"),
                             (config.ALERTMANAGER_CONN_ID, "alertmanager")):
        conn = conns[conn_id]
        assert conn["conn_type"] == "http"
        url = f"{conn['host']}:{conn['port']}/-/ready"
        assert url == f"{ctx.url(service)}/-/ready"
        assert requests.get(url, timeout=5).status_code == 200


def test_rule_file_delivered_and_reloaded_fires_and_reaches_mail_and_slack(ctx, rule_file):
    # A fresh alert name per run: Alertmanager would not repeat a group it already notified.
    alert = f"SandboxAlwaysFiring{uuid.uuid4().hex[:8]}"
    rule_file.write_text(always_firing(alert, "sandbox-test"))

    monitoring.reload_prometheus(ctx)

    assert loaded_rules(ctx)["sandbox-test"] == [alert]
    mail = sinks.wait_for_mail(ctx, lambda m: alert in m["subject"], timeout=60)
    assert mail["subject"].startswith("[FIRING:1]")
    assert mail["to"] == [config.DEFAULT_TEAM_EMAIL]
    assert (mail["auth_login"], mail["tls"]) == (sinks.SMTP_USER, True)
    assert f"sandbox test alert {alert}" in mail["text"]
    post = sinks.wait_for_slack(ctx, lambda p: alert in str(p["payload"]), timeout=60)
    assert post["payload"]["channel"] == monitoring.SLACK_CHANNEL
    assert post["path"] == "/services/T0SANDBOX/B0ALERTS/alertmanager"


def test_broken_rule_file_fails_the_reload_and_keeps_the_previous_rules(ctx, rule_file):
    good = monitoring.rules_dir(ctx) / f"test-good-{uuid.uuid4().hex[:8]}.yml"
    good.write_text(always_firing("SandboxKeptRule", "sandbox-kept"))
    try:
        monitoring.reload_prometheus(ctx)
        before = loaded_rules(ctx)
        assert before["sandbox-kept"] == ["SandboxKeptRule"]

        rule_file.write_text(broken("SandboxBroken", "sandbox-broken"))
        with pytest.raises(SandboxError, match="HTTP 500") as refused:
            monitoring.reload_prometheus(ctx)

        assert f"{rule_file}: " in str(refused.value)  # promtool names the file and the rule
        assert "SandboxBroken" in str(refused.value)
        assert loaded_rules(ctx) == before
        assert monitoring.healthy(ctx)
    finally:
        good.unlink()


def test_up_with_a_broken_rule_file_left_behind_fails_naming_the_cause(ctx, rule_file):
    monitoring.down(ctx)
    rule_file.write_text(broken("SandboxBroken", "sandbox-broken"))
    try:
        with pytest.raises(SandboxError, match="prometheus exited during start") as failed:
            monitoring.up(ctx)
        assert rule_file.name in str(failed.value)
    finally:
        rule_file.unlink()
        monitoring.up(ctx)
    assert monitoring.healthy(ctx)


def test_up_twice_keeps_the_same_processes(ctx):
    pids = [read_pid(ctx, name) for name in PROCESSES]
    monitoring.up(ctx)
    assert [read_pid(ctx, name) for name in PROCESSES] == pids


def test_down_leaves_no_process_or_port_open(ctx):
    pids = [read_pid(ctx, name) for name in PROCESSES]
    monitoring.down(ctx)
    try:
        assert not any(pid_alive(pid) for pid in pids)
        assert not port_open(ctx.port("prometheus"))
        assert not port_open(ctx.port("alertmanager"))
        assert not monitoring.healthy(ctx)
    finally:
        monitoring.up(ctx)
    assert monitoring.healthy(ctx)
