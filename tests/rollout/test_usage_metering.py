"""Phase 3's checks without a scheduler, against the sandbox's real services: the flags in the
service's running task definition (moto's ECS), the migrations as a one-off task (run for real, log
lines read back from moto's CloudWatch Logs), the usage tables from information_schema, and a real
locust load test of the stand-in application with its metering and quota enforcement. Each failing
case names what it saw."""

from __future__ import annotations

import copy
import json
import uuid

import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import usage_metering as usage
from bisman_ops.rollout.usage_metering import load_test, meter_settings, one_off, quota, schema, tenants
from tests.rollout.conftest import seeded_outputs


@pytest.fixture(scope="module")
def metering_env(sandbox_env):
    """The sandbox (its workers' connections set) and the Terraform outputs its seeding stands for."""
    return {"ctx": sandbox_env, "outputs": seeded_outputs(sandbox_env)}


# -- settings ----------------------------------------------------------------------------------------


def test_the_service_runs_with_the_meter_and_quota_enforcement_on_and_only_names_are_reported(metering_env):
    _, _svc, td, container = usage._service_and_definition(metering_env["outputs"])
    measured = meter_settings.flags_verdict(td, container)
    assert measured["flags"] == {"USAGE_METER_ENABLED": "enabled", "QUOTA_ENFORCEMENT_ENABLED": "enabled"}
    assert measured["container"] == "app" and measured["task_definition"].endswith(":2")
    values = {e["value"] for e in container["environment"]}
    # Names only, never values (a value that is part of the task definition's name aside).
    assert [v for v in values if v in json.dumps(measured) and v not in measured["task_definition"]] == []


@pytest.mark.parametrize(("change", "named"), [
    ({"USAGE_METER_ENABLED": "false"},
     "USAGE_METER_ENABLED is set in container app of bisman-erp-staging-app:2 but not on"),
    ({"QUOTA_ENFORCEMENT_ENABLED": None}, "QUOTA_ENFORCEMENT_ENABLED is missing from container app"),
])
def test_a_disabled_or_missing_meter_setting_fails_naming_it(metering_env, change, named):
    _, _svc, td, container = usage._service_and_definition(metering_env["outputs"])
    container = copy.deepcopy(container)
    env = {e["name"]: e["value"] for e in container["environment"]}
    for name, value in change.items():
        env.pop(name) if value is None else env.__setitem__(name, value)
    container["environment"] = [{"name": k, "value": v} for k, v in env.items()]
    with pytest.raises(CheckFailed) as failed:
        meter_settings.flags_verdict(td, container)
    assert named in str(failed.value)
    assert "false" not in json.dumps(failed.value.measured)


# -- migrations --------------------------------------------------------------------------------------


def _migrate_once(outputs: dict) -> dict:
    client, svc, td, container = usage._service_and_definition(outputs)
    task = one_off.migration_task(svc, td, container, run_key=f"test/{uuid.uuid4().hex}")
    runner = one_off.runner(client)
    started = runner.start(task)
    state = runner.poll(task, started["task_arn"])
    lines = one_off.log_lines(usage.aws("logs"), task.log_group, task.log_stream(started["task_id"]))
    poke = one_off.migration_verdict(task, started, state, lines)
    return {"runner": runner.name, "poke": poke, "task": task}


def test_migrations_run_as_a_one_off_task_of_the_service_and_running_them_again_is_a_no_op(metering_env):
    first, again = _migrate_once(metering_env["outputs"]), _migrate_once(metering_env["outputs"])
    assert first["runner"] == "sandbox"  # registered by configuration, not known to the product
    task = first["task"]
    assert task.command == one_off.MIGRATE_COMMAND and task.container == "app"
    assert task.network_configuration["awsvpcConfiguration"]["subnets"]  # the service's own network
    for run in (first, again):
        assert run["poke"].done and run["poke"].measured["exit_code"] == 0
        assert run["poke"].measured["log_lines"]  # read back from CloudWatch Logs
    assert again["poke"].measured["applied"] == [] and again["poke"].measured["no_op"] is True


def test_a_migration_task_that_exits_non_zero_fails_with_its_exit_code_and_last_log_lines():
    task = one_off.OneOffTask("c", "arn:td/app:3", "app", one_off.MIGRATE_COMMAND, {}, "FARGATE", (), None,
                              "tok", "/group", "app")
    with pytest.raises(CheckFailed) as failed:
        one_off.migration_verdict(task, {"task_id": "t1"}, {"status": "STOPPED", "exit_code": 1,
                                                            "stopped_reason": "Essential container exited"},
                                  ["applying 0006_x.sql", "migrations: migration 0006_x.sql failed"])
    assert "exit code 1" in str(failed.value) and "0006_x.sql failed" in str(failed.value)


# -- tables ------------------------------------------------------------------------------------------


def test_the_usage_tables_have_the_contracts_columns_and_keys(metering_env):
    with usage.primary() as conn:
        measured = schema.verify_tables(conn)
    assert measured["client_daily_usage"]["primary_key"] == ["tenant_id", "usage_date", "metric"]


def test_a_missing_table_column_or_key_is_named(metering_env):
    from bisman_ops import migrations

    scratch = f"usage_check_{uuid.uuid4().hex[:8]}"
    first = migrations.discover()[0]
    with usage.primary() as conn:
        conn.execute(f"CREATE SCHEMA {scratch}")
        try:
            conn.execute(f"SET search_path TO {scratch}")
            conn.execute(first.sql())
            conn.execute("ALTER TABLE client_daily_usage DROP COLUMN updated_at")
            conn.execute("ALTER TABLE events DROP CONSTRAINT events_dedup_key_key")
            conn.execute("DROP TABLE tenant_quotas")
            with pytest.raises(CheckFailed) as failed:
                schema.verify_tables(conn)
        finally:
            conn.execute("SET search_path TO public")
            conn.execute(f"DROP SCHEMA {scratch} CASCADE")
    message = str(failed.value)
    assert "column client_daily_usage.updated_at is missing" in message
    assert "table tenant_quotas does not exist" in message
    assert "events.dedup_key is not unique" in message
    assert "tenant_usage" not in message  # the table that matches is not blamed


# -- load test, metering, quotas: one real run against the stand-in application ------------------------


@pytest.fixture(scope="module")
def load_run(metering_env):
    from bisman_ops.clients import app_http

    shape = load_test.LoadShape(users=3, duration_s=6, spawn_rate=3, p95_ms=2000, max_error_ratio=0.05,
                                min_rps=0.5)
    planned = tenants.planned(f"test-usage-{uuid.uuid4().hex}")
    secret = usage.jwt_secret(metering_env["outputs"])
    clients = [t for t in planned if t["role"] != "quota"]
    ids = [t["id"] for t in clients]
    with usage.primary() as conn:
        tenants.create(conn, planned)
    try:
        with usage.primary() as conn:
            before = tenants.metered(conn, ids)
        raw = load_test.run(app_http.base_url(), [
            {"id": t["id"], "token": usage.tenant_token(secret, t["id"], 600),
             "expect_429": t["day_quota"] is not None} for t in clients], shape)
        stats = load_test.summarize(raw, [{"id": t["id"], "expect_429": t["day_quota"] is not None}
                                          for t in clients], shape)
        with usage.primary() as conn:
            after = tenants.metered(conn, ids)
        q = next(t for t in planned if t["role"] == "quota")
        token = usage.tenant_token(secret, q["id"], 600)
        answers = quota.push_past_quota(usage.app_call, token, q["day_quota"])
        with usage.primary() as conn:
            quota_used = tenants.metered(conn, [q["id"]])[q["id"]]
        yield {"shape": shape, "stats": stats, "before": before, "after": after, "planned": planned,
               "answers": answers, "quota_tenant": q, "quota_used": quota_used}
    finally:
        with usage.primary() as conn:
            removed = tenants.remove(conn, [t["id"] for t in planned])
        assert removed["tenants_removed"] == len(planned)


def test_the_load_test_reports_percentiles_throughput_and_status_counts_and_meets_loose_thresholds(load_run):
    stats = load_run["stats"]
    assert stats["requests"] > 0 and stats["status_counts"].get("200", 0) > 0
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]
    assert stats["throughput_rps"] > 0 and stats["errors"] == 0
    limited = next(t for t in load_run["planned"] if t["role"] == "limited")
    # The limited tenant's 200s stop at its quota; its 429s are expected, not errors.
    assert stats["per_tenant"][str(limited["id"])].get("200", 0) <= limited["day_quota"]
    assert all(r["passed"] for r in load_test.judge(stats, load_run["shape"]))


def test_a_load_test_over_its_thresholds_fails_naming_each_threshold_and_what_was_seen(load_run):
    strict = load_test.LoadShape(users=3, duration_s=6, spawn_rate=3, p95_ms=0.001, max_error_ratio=0.05,
                                 min_rps=100_000)
    with pytest.raises(CheckFailed) as failed:
        load_test.judge(load_run["stats"], strict)
    message = str(failed.value)
    assert f"p(95) < 0.001 ms crossed: seen {load_run['stats']['p95_ms']}" in message
    assert f"throughput > 100000 req/s crossed: seen {load_run['stats']['throughput_rps']}" in message
    assert "error ratio" not in message.split("expected")[0]  # the threshold that held is not blamed


def test_metering_is_exact_the_calls_made_equal_the_usage_growth(load_run):
    before = {str(k): v for k, v in load_run["before"].items()}
    measured, _rows = tenants.metering_verdict(before, load_run["stats"]["per_tenant"], load_run["after"])
    assert measured["requests_metered_by_load_test"] == measured["client_daily_usage_growth"] > 0


def test_metering_that_misses_calls_fails_naming_the_tenant_and_both_numbers():
    with pytest.raises(CheckFailed) as failed:
        tenants.metering_verdict({"7": 0}, {"7": {"200": 12, "429": 3}}, {7: 10})
    assert "tenant 7: the load test made 12 metered calls, client_daily_usage grew by 10" in str(failed.value)


def test_a_tenant_pushed_past_its_quota_gets_429_and_the_quota_endpoint_agrees(load_run):
    q = load_run["quota_tenant"]
    measured = quota.quota_verdict(q["id"], q["day_quota"], load_run["answers"], load_run["quota_used"])
    assert measured["statuses"] == [200] * q["day_quota"] + [429]
    assert measured["first_answer_day"]["quota"] == q["day_quota"]
    assert measured["refusal"]["period"] == "day" and measured["client_daily_usage"] == q["day_quota"]


def test_a_quota_not_enforced_fails_naming_the_statuses_seen():
    answers = [{"status": 200, "body": {"tenant_id": 5, "quotas": {"api_calls": {"day": {
        "quota": 3, "usage": n, "remaining": max(3 - n, 0)}}}}} for n in range(1, 6)]
    with pytest.raises(CheckFailed) as failed:
        quota.quota_verdict(5, 3, answers, 5)
    assert "no 429 after 5 calls with a day quota of 3" in str(failed.value)


def test_removing_the_test_tenants_removes_what_was_written_about_them_and_never_a_real_tenant(metering_env):
    planned = tenants.planned(f"test-removal-{uuid.uuid4().hex}")
    ids = [t["id"] for t in planned]
    with usage.primary() as conn:
        tenants.create(conn, planned)
        conn.execute("INSERT INTO client_daily_usage (tenant_id, usage_date, metric, quantity) "
                     "VALUES (%s, current_date, 'api_calls', 4)", (ids[0],))
        conn.execute("INSERT INTO events (tenant_id, type) VALUES (%s, 'quota.alert')", (ids[0],))
        removed = tenants.remove(conn, [*ids, 1])  # tenant 1 is a real (seed) tenant: never removed
        left = conn.execute("SELECT count(*) FROM tenants WHERE id = ANY(%s)", (ids,)).fetchone()[0]
        usage_left = conn.execute("SELECT count(*) FROM client_daily_usage WHERE tenant_id = ANY(%s)",
                                  (ids,)).fetchone()[0]
        real = conn.execute("SELECT count(*) FROM tenants WHERE id = 1").fetchone()[0]
    assert removed == {"tenants_removed": len(planned), "tenant_usage_rows_removed": 0, "events_removed": 1}
    assert (left, usage_left, real) == (0, 0, 1)


def test_bad_load_test_params_are_refused_naming_each(monkeypatch):
    with pytest.raises(CheckFailed) as failed:
        usage.load_shape({"load_test_users": 0, "load_test_duration_seconds": 2.5, "load_test_p95_ms": 0})
    message = str(failed.value)
    assert "load_test_users=0 must be at least 1" in message
    assert "load_test_duration_seconds=2.5 is not a whole number" in message
    assert "load_test_p95_ms=0 must be more than 0" in message
    assert usage.load_shape({}).users == 100 and usage.load_shape({}).duration_s == 300  # prod defaults
