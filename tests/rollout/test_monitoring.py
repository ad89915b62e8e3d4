"""Phase 6 without a scheduler: dashboards as code and their export, the rule files under promtool
and amtool, and, against the sandbox's real Prometheus, Alertmanager, sinks and the Grafana API
stand-in: rule delivery and reload (a broken file keeps the old rules), panels with and without
data, the dashboards' import (overwrite and a 412 conflict), and the canary followed hop by hop."""

from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest
import yaml

from bisman_ops.change.errors import CheckFailed
from bisman_ops.monitoring import alerts, dashboards, delivery, grafana, prometheus, promtool
from bisman_ops.rollout import monitoring as mon
from bisman_ops.rollout.usage_metering import tenants

# -- dashboards as code ------------------------------------------------------------------------------


def test_the_exported_dashboard_json_is_what_the_code_builds():
    assert mon.export_drift() == []
    built = dashboards.build_all()
    assert {m["uid"] for m in built.values()} == {"bisman-tenant", "bisman-sla", "bisman-platform"}
    sla = [p["title"] for p in built["sla"]["panels"]]
    assert any("p95" in t for t in sla) and any("Redis" in t for t in sla) and any("lag" in t for t in sla)


def test_a_stale_export_is_named(tmp_path, monkeypatch):
    shutil.copytree(dashboards.EXPORT_DIR, tmp_path / "d")
    stale = json.loads((tmp_path / "d" / "sla.json").read_text())
    stale["panels"][0]["title"] = "edited by hand"
    (tmp_path / "d" / "sla.json").write_text(json.dumps(stale))
    monkeypatch.setattr(dashboards, "EXPORT_DIR", tmp_path / "d")
    assert mon.export_drift() == ["sla.json"]


def test_panel_queries_substitute_variables_and_refuse_an_unknown_one():
    queries = dashboards.panel_queries(dashboards.build_all()["tenant"])
    assert queries and all("$" not in q["expr"] for q in queries)
    assert 'tenant_id=~".*"' in queries[0]["expr"] and "[1m]" in queries[0]["expr"]
    with pytest.raises(ValueError, match=r"\$nosuch"):
        dashboards.substitute('up{x="$nosuch"}', {})


# -- rule files ----------------------------------------------------------------------------------------


def test_every_rule_file_passes_promtool_check_and_its_own_unit_tests():
    files = promtool.rule_files()
    assert {f.name for f in files} >= {
        "bisman-app.rules.yml",
        "bisman-jobs.rules.yml",
        "bisman-meta.rules.yml",
    }
    for f in files:
        assert promtool.test_file_for(f).exists(), f
    assert promtool.validate(files) == []


def test_a_rule_file_that_does_not_parse_is_rejected_naming_it(tmp_path):
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m])\n"
    )
    problems = promtool.validate([broken])
    assert problems and "broken.rules.yml" in problems[0] and "promtool check rules" in problems[0]
    assert any("no promtool tests file for broken.rules.yml" in p for p in problems)


def test_a_failing_promtool_unit_test_is_reported(tmp_path):
    shutil.copy(promtool.RULES_DIR / "bisman-meta.rules.yml", tmp_path / "bisman-meta.rules.yml")
    (tmp_path / "tests").mkdir()
    test = (
        (promtool.TESTS_DIR / "bisman-meta.test.yml").read_text().replace("severity: none", "severity: page")
    )
    (tmp_path / "tests" / "bisman-meta.test.yml").write_text(test)
    problems = promtool.validate([tmp_path / "bisman-meta.rules.yml"])
    assert len(problems) == 1 and problems[0].startswith("promtool test rules") and "Watchdog" in problems[0]


def test_alertmanager_routes_every_alert_to_email_and_slack_and_a_blackhole_is_named(tmp_path):
    from bisman_sandbox import monitoring as sandbox_monitoring
    from bisman_sandbox.context import SandboxContext

    conf = sandbox_monitoring.alertmanager_config(SandboxContext.from_env())
    alerts_ = mon.alert_labels(mon._rule_files())
    assert mon.routing_problems(yaml.safe_dump(conf), alerts_, promtool.route_receivers) == []
    conf["receivers"].append({"name": "blackhole"})
    conf["route"]["routes"] = [{"receiver": "blackhole", "matchers": ['alertname="Watchdog"']}]
    assert mon.routing_problems(yaml.safe_dump(conf), alerts_, promtool.route_receivers) == [
        "Watchdog routes to ['blackhole'], none of which has email and Slack"
    ]


# -- where an alert stopped ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "stopped_at"),
    [
        ({"prometheus_firing": False, "alertmanager_active": False, "received": {}}, "Prometheus"),
        ({"prometheus_firing": True, "alertmanager_active": False, "received": {}}, "Alertmanager"),
        (
            {
                "prometheus_firing": True,
                "alertmanager_active": True,
                "received": {"email": True, "slack": False},
            },
            "the receiver: Watchdog is active in Alertmanager but not received by slack",
        ),
    ],
)
def test_a_canary_that_does_not_arrive_names_the_hop_it_stopped_at(seen, stopped_at):
    assert alerts.where_it_stopped("Watchdog", seen).startswith(stopped_at)


def test_the_wait_budget_grows_with_the_configured_intervals():
    short = alerts.wait_budget_s(for_s=0, evaluation_s=5, group_wait_s=1, group_interval_s=5, scrape_s=5)
    assert short < alerts.wait_budget_s(for_s=300, evaluation_s=60, group_wait_s=30, group_interval_s=300)


def test_a_failed_reload_is_named_even_when_the_old_rules_look_healthy():
    expected = {"bisman-meta": ["Watchdog"]}
    groups = [{"name": "bisman-meta", "rules": [{"name": "Watchdog", "health": "ok"}]}]
    assert delivery.load_problems(expected, groups, {"reloadConfigSuccess": True}) == []
    problems = delivery.load_problems(expected, groups, {"reloadConfigSuccess": False})
    assert problems and "kept the previous rules" in problems[0]


# -- against the sandbox -------------------------------------------------------------------------------


def _wait_loaded(expected, delivered_at, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        problems = delivery.load_problems(
            expected, prometheus.rule_groups(), prometheus.runtime_info(), delivered_at
        )
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


def test_rules_delivered_are_loaded_healthy_and_a_broken_file_keeps_the_old_rules(sandbox_env):
    from bisman_sandbox import monitoring as sandbox_monitoring

    files = mon._rule_files()
    impl = delivery.rule_delivery()
    assert impl.name == "sandbox-rules-dir"
    started = time.time()
    assert impl.deliver(files)["reloaded"] is True
    assert _wait_loaded(delivery.expected_rules(files), started) == []

    # A file that does not parse, written behind promtool's back: the reload fails, Prometheus keeps the
    # previous rules (still healthy), and the check says so.
    broken = sandbox_monitoring.rules_dir(sandbox_env) / "zz-broken.yml"
    broken.write_text("groups:\n  - name: broken\n    rules:\n      - alert: X\n        expr: sum(\n")
    try:
        answer = impl.deliver(
            {
                **files,
                "bisman-extra.rules.yml": files["bisman-meta.rules.yml"].replace(
                    "name: bisman-meta", "name: bisman-extra"
                ),
            }
        )
        assert answer["reloaded"] is False and "HTTP 500" in answer["error"]
        expected = delivery.expected_rules(
            {**files, "x": "groups: [{name: bisman-extra, rules: [{alert: Watchdog}]}]"}
        )
        problems = delivery.load_problems(expected, prometheus.rule_groups(), prometheus.runtime_info())
        assert (
            problems[0].startswith("Prometheus' last reload failed")
            and "group bisman-extra not loaded" in problems
        )
        assert "bisman-meta" in {g["name"] for g in prometheus.rule_groups()}  # the old rules stay
    finally:
        broken.unlink(missing_ok=True)
        assert impl.deliver(files)["reloaded"] is True


def test_the_probe_tenant_is_a_test_tenant_of_its_own_reused_by_a_retry():
    probe, planned = tenants.probe("manual__a"), tenants.planned("manual__a")
    assert probe["id"] >= tenants.TEST_ID_BASE and probe["slug"].startswith(tenants.SLUG_PREFIX)
    assert probe["id"] not in {t["id"] for t in planned} and probe["day_quota"] is None
    assert tenants.probe("manual__a") == probe and tenants.probe("manual__b")["id"] != probe["id"]


def body(task):
    """The phase module's own function under a ``@step`` task (``functools.wraps`` keeps it)."""
    return task.function.__wrapped__


def test_the_probe_tenants_traffic_gives_every_panel_data_and_a_panel_without_data_is_named(sandbox_env):
    from bisman_ops.rollout.usage_metering import primary
    from bisman_sandbox import aws

    mon._rule_files() and delivery.rule_delivery().deliver(mon._rule_files())  # ALERTS has the Watchdog
    outputs = {"app_secrets_arn": aws.names().app_secret_name}
    probe = tenants.probe(f"test-monitoring-{uuid.uuid4().hex}")
    with primary() as conn:
        tenants.create(conn, [probe])
    try:
        deadline = time.monotonic() + 60
        while True:  # each look sends the probe's requests; the first scrapes after them (5 s apart)
            look = body(mon.panels_show_live_data)({}, {}, outputs, probe)
            if look.done or time.monotonic() > deadline:
                break
            time.sleep(prometheus.global_interval()["scrape_s"])
        assert look.done, look.waiting_for
        assert look.value["panels"] == look.measured["panels_queried"] >= 15
        assert look.measured["series"]["BISMAN ERP / Tenants / Requests per second by tenant (A)"] >= 1
        with primary() as conn:
            assert tenants.metered(conn, [probe["id"]])[probe["id"]] > 0  # its traffic was metered
    finally:
        removed = body(mon.probe_tenant_removed)(probe)
    assert removed["tenants_removed"] == 1
    with primary() as conn:  # the teardown leaves no trace of it
        assert tenants.metered(conn, [probe["id"]])[probe["id"]] == 0
        assert conn.execute("SELECT count(*) FROM tenants WHERE id = %s", (probe["id"],)).fetchone()[0] == 0

    empty = {
        "dashboard": "BISMAN ERP / SLA",
        "panel": "Ghost metric",
        "ref": "A",
        "expr": "sum(rate(bisman_metric_nobody_exports_total[1m]))",
    }
    bad = {**empty, "panel": "Typo", "expr": "sum(rate(http_requests_total[1m])"}
    _, problems = mon.panels_without_data([empty, bad], prometheus.query)
    assert problems[0] == (
        "BISMAN ERP / SLA / Ghost metric (A): no series for sum(rate(bisman_metric_nobody_exports_total[1m]))"
    )
    assert problems[1].startswith("BISMAN ERP / SLA / Typo (A): query does not run: bad_data")


def test_the_canary_reaches_alertmanager_and_both_sinks(sandbox_env):
    files = mon._rule_files()
    delivery.rule_delivery().deliver(files)
    _wait_loaded(delivery.expected_rules(files), None)
    mark = mon._mark("Watchdog")
    assert mark["evaluation_s"] == 5 and mark["repeat_interval_s"] == 20 and mark["budget_s"] < 200
    deadline = time.monotonic() + mark["budget_s"]
    while True:
        poke = mon._alert_poke("Watchdog", mark, mark["budget_s"])
        if poke.done or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert poke.done, poke.waiting_for
    assert poke.measured["received"] == {"email": True, "slack": True}


def test_dashboards_import_into_the_folder_and_a_version_conflict_is_a_clear_412(sandbox_env):
    g = grafana.api()
    folder = grafana.ensure_folder(g, "bisman-erp-test", "BISMAN ERP test")
    assert grafana.ensure_folder(g, "bisman-erp-test", "BISMAN ERP test")["created"] is False
    uid = f"t-sla-{time.time_ns()}"  # and its own title: Grafana refuses a second one in a folder
    model = {**dashboards.build_all()["sla"], "uid": uid, "title": f"SLA {uid}"}
    first = grafana.import_dashboard(g, model, folder["uid"], overwrite=False, message="test")
    assert first["version"] == 1 and first["url"].startswith(f"/d/{model['uid']}/")
    again = grafana.import_dashboard(g, model, folder["uid"], overwrite=False, message="test")
    assert again["version"] == 2 and again["previous_version"] == 1
    # Someone saves it in between our read and our write: Grafana answers 412, reported as a conflict.
    real_get = g.dashboard.get_dashboard
    g.dashboard.get_dashboard = lambda uid: {
        **real_get(uid),
        "dashboard": {**real_get(uid)["dashboard"], "version": 1},
    }
    with pytest.raises(CheckFailed, match=r"HTTP 412 version-mismatch.*changed by someone else"):
        grafana.import_dashboard(g, model, folder["uid"], overwrite=False, message="test")
    g.dashboard.get_dashboard = real_get
    assert grafana.import_dashboard(g, model, folder["uid"], overwrite=True, message="test")["version"] == 3
    # A different dashboard with the same title in the folder: named as such, not as a conflict.
    with pytest.raises(CheckFailed, match=r"412 name-exists.*Another dashboard in that folder"):
        grafana.import_dashboard(g, {**model, "uid": f"{uid}-twin"}, folder["uid"], overwrite=False,
                                 message="test")


def test_amp_delivery_creates_a_namespace_per_file_then_updates_it(sandbox_env):
    """The production delivery (Amazon Managed Service for Prometheus) against moto's AMP: the first
    delivery creates one rule groups namespace per file, the next one puts a new version of each."""
    from bisman_sandbox import aws

    amp = aws.client(sandbox_env, "amp")
    workspace = amp.create_workspace(alias=f"test-{uuid.uuid4().hex[:8]}")["workspaceId"]
    try:
        files = delivery.read_rule_files(promtool.rule_files())
        sent = delivery.AmpRuleDelivery(workspace).deliver(files)
        assert set(sent["namespaces"]) == set(files) and sent["delivery"] == "amp"
        listed = amp.list_rule_groups_namespaces(workspaceId=workspace)["ruleGroupsNamespaces"]
        assert {n["name"] for n in listed} == {f.removesuffix(".yml").replace(".", "-") for f in files}
        first = next(iter(files))
        ns = first.removesuffix(".yml").replace(".", "-")
        changed = files[first].replace("for: ", "for:  ", 1)
        delivery.AmpRuleDelivery(workspace).deliver({first: changed})  # exists: put, not create
        stored = amp.describe_rule_groups_namespace(workspaceId=workspace, name=ns)["ruleGroupsNamespace"]
        assert stored["data"] == changed.encode()
    finally:
        amp.delete_workspace(workspaceId=workspace)
