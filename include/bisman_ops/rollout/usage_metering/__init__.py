"""Phase 3, usage metering and quotas: the settings the service runs with, the migrations as a
one-off ECS task, the usage tables against CONTRACT.md, a load test judged by thresholds, metering
that is exact, and quota enforcement seen by a tenant.

The checks live in the submodules (``meter_settings``, ``one_off``, ``schema``, ``tenants``,
``load_test``, ``quota``) and take plain values and clients; the tasks below are the DAG's
``usage_metering`` group, fed the Terraform outputs, and ``PARAMS`` is its part of the form.
Test tenants exist only between ``test_tenants_planned`` and its teardown ``test_tenants_removed``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param

from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, Result, context, step

HTTP_TIMEOUT_S = 15
TOKEN_TTL_MARGIN_S = 600

PARAMS: dict[str, Param] = {
    "load_test_users": Param(100, type="integer", minimum=1, maximum=5000, title="Load test users",
                             description="Simulated clients (the checklist's --vus); each is one test "
                                         "tenant's client."),
    "load_test_duration_seconds": Param(300, type="integer", minimum=5, maximum=3600,
                                        title="Load test duration (s)",
                                        description="The checklist's --duration (5 min)."),
    "load_test_p95_ms": Param(500, type="number", exclusiveMinimum=0,
                              title="Load test p95 latency limit (ms)",
                              description="The checklist's p(95) threshold over every request."),
    "load_test_max_error_ratio": Param(0.01, type="number", exclusiveMinimum=0, maximum=1,
                                       title="Load test error ratio limit",
                                       description="Failed responses out of all, the expected 429s of the "
                                                   "limited test tenant excluded."),
    "load_test_min_rps": Param(50, type="number", minimum=0, title="Load test minimum throughput (req/s)",
                               description="Requests per second the load test must sustain."),
}


def load_shape(params: dict[str, Any]):
    """The load test's shape and thresholds from the form; CheckFailed naming every bad value."""
    from bisman_ops.rollout.usage_metering.load_test import LoadShape

    problems: list[str] = []

    def number(key: str, integer: bool, low: float, allow_low: bool) -> float:
        value = params.get(key, PARAMS[key].value)
        if isinstance(value, bool) or not isinstance(value, int | float) or (integer and value != int(value)):
            problems.append(f"{key}={value!r} is not a {'whole ' if integer else ''}number")
            return low
        if value < low or (value == low and not allow_low):
            problems.append(f"{key}={value!r} must be {'at least' if allow_low else 'more than'} {low:g}")
        return value

    users = int(number("load_test_users", True, 1, True))
    duration = int(number("load_test_duration_seconds", True, 5, True))
    shape = LoadShape(users=users, duration_s=duration, spawn_rate=max(1.0, users / 10),
                      p95_ms=float(number("load_test_p95_ms", False, 0, False)),
                      max_error_ratio=float(number("load_test_max_error_ratio", False, 0, False)),
                      min_rps=float(number("load_test_min_rps", False, 0, True)))
    fail_unless(problems, "usage_metering parameters", "valid load test shape and thresholds",
                "Trigger again with corrected values; nothing was changed")
    return shape


# -- clients at the edge -----------------------------------------------------------------------------


def aws(service: str) -> Any:
    from bisman_ops.clients import aws as aws_client

    return aws_client.client(service)


def ecs() -> Any:
    """ECS through the Amazon provider's ``EcsHook``; RunTask is not retried by botocore (the
    clientToken makes ECS start one task per run anyway)."""
    from airflow.providers.amazon.aws.hooks.ecs import EcsHook

    from bisman_ops.clients import aws as aws_client

    return aws_client.provider_hook(EcsHook, "ecs").conn


def app_call(method: str, path: str, headers: dict) -> Any:
    """The application's API, tried once: every tenant call is metered, a retry would count twice."""
    from bisman_ops.clients import app_http

    return app_http.request(method, path, headers=headers, timeout=HTTP_TIMEOUT_S, attempts=1)


def jwt_secret(outputs: dict[str, Any]) -> str:
    from bisman_ops.rollout import preflight

    return preflight.read_app_secret(aws("secretsmanager"), outputs["app_secrets_arn"])["JWT_SECRET"]


def tenant_token(secret: str, tenant_id: int, ttl: int) -> str:
    from bisman_ops import app_tokens

    return app_tokens.mint(secret, tenant_id=tenant_id, role="tenant", ttl=ttl, subject="bisman-rollout")


def primary():
    from bisman_ops import config
    from bisman_ops.clients import postgres

    return postgres.connect(config.APP_DB_PRIMARY_CONN_ID, autocommit=True,
                            application_name="bisman-rollout-usage")


def _service_and_definition(outputs: dict[str, Any]) -> tuple[Any, dict, dict, dict]:
    from bisman_ops.rollout.usage_metering import meter_settings

    client = ecs()
    svc = meter_settings.service(client, outputs["ecs_cluster_name"], outputs["ecs_service_name"])
    td = meter_settings.running_task_definition(client, svc)
    return client, svc, td, meter_settings.app_container(svc, td)


# -- tasks: the DAG's usage_metering group -------------------------------------------------------------


@step
def usage_params_valid() -> dict:
    """The load test's shape and thresholds (the form), checked before this phase changes anything."""
    return load_shape(context()["params"]).as_dict()


@step
def meter_settings_enabled(outputs: dict) -> dict:
    """USAGE_METER_ENABLED and QUOTA_ENFORCEMENT_ENABLED on in the service's running task definition."""
    from bisman_ops.rollout.usage_metering import meter_settings

    _, _, td, container = _service_and_definition(outputs)
    return meter_settings.flags_verdict(td, container)


@step(changes=True)
def migrations_task_started(outputs: dict) -> dict:
    """The migration command as a one-off task of the service's task definition and network."""
    from bisman_ops.rollout.usage_metering import one_off

    client, svc, td, container = _service_and_definition(outputs)
    ti = context()["ti"]
    task = one_off.migration_task(svc, td, container, run_key=f"{ti.dag_id}/{ti.run_id}")
    run = one_off.runner(client)
    started = run.start(task)
    return {**started, "runner": run.name, "task": task.as_dict()}


@step.sensor(poke_interval=timedelta(seconds=10), timeout=timedelta(minutes=30))
def migrations_succeeded(outputs: dict, started: dict) -> Poke:
    """The migration task stopped with exit code 0, its log lines in CloudWatch Logs."""
    from bisman_ops.rollout.usage_metering import one_off

    task = one_off.OneOffTask.from_dict(started["task"])
    state = one_off.runner(ecs()).poll(task, started["task_arn"])
    lines = one_off.log_lines(aws("logs"), task.log_group, task.log_stream(started["task_id"]))
    return one_off.migration_verdict(task, started, state, lines)


@step
def usage_tables_match_contract(migrated: dict) -> dict:
    """tenant_usage, tenant_quotas, events and client_daily_usage as CONTRACT.md has them."""
    from bisman_ops.rollout.usage_metering import schema

    with primary() as conn:
        return {**schema.verify_tables(conn), "migrations_applied": migrated.get("applied", [])}


@step
def test_tenants_planned() -> list[dict]:
    """Setup: the run's test tenants (ids and quotas), recorded before any is created, so the
    teardown removes them whatever ``test_tenants_created`` then did."""
    from bisman_ops.rollout.usage_metering import tenants

    return tenants.planned(context()["run_id"])


@step(changes=True)
def test_tenants_created(planned: list[dict]) -> list[dict]:
    """The planned tenants with their quotas and no usage."""
    from bisman_ops.rollout.usage_metering import tenants

    with primary() as conn:
        tenants.create(conn, planned)
    return planned


@step
def load_test_within_thresholds(outputs: dict, shape: dict, test_tenants: list[dict]) -> Result:
    """locust headless against the application, judged by the thresholds of the form."""
    from bisman_ops.change.report import Section
    from bisman_ops.clients import app_http
    from bisman_ops.rollout.usage_metering import load_test, tenants

    s = load_test.LoadShape(**shape)
    secret = jwt_secret(outputs)
    clients = [t for t in test_tenants if t["role"] != "quota"]
    ttl = s.duration_s + load_test.STARTUP_ALLOWANCE_S + TOKEN_TTL_MARGIN_S
    ids = [t["id"] for t in clients]
    with primary() as conn:
        before = tenants.metered(conn, ids)
    raw = load_test.run(app_http.base_url(), [
        {"id": t["id"], "token": tenant_token(secret, t["id"], ttl), "expect_429": t["day_quota"] is not None}
        for t in clients], s)
    stats = load_test.summarize(raw, [{"id": t["id"], "expect_429": t["day_quota"] is not None}
                                      for t in clients], s)
    rows = load_test.judge(stats, s)
    section = Section("Load test")
    section.add("shape", f"{s.users} users for {s.duration_s} s against {app_http.base_url()}")
    for key in ("requests", "throughput_rps", "p50_ms", "p95_ms", "p99_ms", "error_ratio", "expected_429"):
        section.add(key, stats[key])
    section.table("thresholds", ["threshold", "seen", "passed"],
                  [[r["threshold"], r["seen"], r["passed"]] for r in rows])
    section.table("status counts", ["status", "responses"],
                  [[k, v] for k, v in stats["status_counts"].items()])
    value = {"before": {str(k): v for k, v in before.items()}, "per_tenant": stats["per_tenant"]}
    return Result(value=value, measured={**stats, "thresholds": rows}, sections=[section])


@step
def metering_exact(test_tenants: list[dict], load: dict) -> Result:
    """The calls the load test made for its tenants equal the growth of their client_daily_usage."""
    from bisman_ops.change.report import Section
    from bisman_ops.rollout.usage_metering import tenants

    ids = [int(i) for i in load["before"]]
    with primary() as conn:
        after = tenants.metered(conn, ids)
    measured, rows = tenants.metering_verdict(load["before"], load["per_tenant"], after)
    section = Section("Metering")
    section.table("calls made vs client_daily_usage growth", ["tenant", "calls made", "usage growth"], rows)
    return Result(value=measured, measured=measured, sections=[section])


@step
def quota_enforced(outputs: dict, test_tenants: list[dict]) -> dict:
    """The quota tenant sees its quota, gets 429 past it, and the quota endpoint agrees."""
    from bisman_ops.rollout.usage_metering import quota, tenants

    t = next((t for t in test_tenants if t["role"] == "quota"), None)
    if t is None:
        raise CheckFailed("the quota check's test tenant", "none planned", "a tenant with role quota",
                          "Clear test_tenants_created")
    token = tenant_token(jwt_secret(outputs), t["id"], TOKEN_TTL_MARGIN_S)
    answers = quota.push_past_quota(app_call, token, int(t["day_quota"]))
    with primary() as conn:
        used = tenants.metered(conn, [t["id"]])[t["id"]]
    return quota.quota_verdict(t["id"], int(t["day_quota"]), answers, used)


@step(lease=False, changes=True)
def test_tenants_removed(planned: list[dict]) -> dict:
    """Teardown: the test tenants and what was written about them go, whatever happened. Without the
    lease check: cleaning up is right even for a run that lost its lock."""
    from bisman_ops.rollout.usage_metering import tenants

    with primary() as conn:
        return tenants.remove(conn, [t["id"] for t in planned])


@step
def usage_metering_gate(load: dict, metering: dict, quota_seen: dict) -> dict:
    return {"requests_metered": metering["requests_metered_by_load_test"],
            "usage_growth": metering["client_daily_usage_growth"],
            "quota_statuses": quota_seen["statuses"], "passed": True}


@phase
def usage_metering(outputs: Any) -> Phase:
    """The migrations as a one-off task, then a load test on test tenants: metering exact, quotas
    enforced; the test tenants removed whatever happened."""
    from airflow.sdk import chain

    from bisman_ops.change.phase import restore

    shape = usage_params_valid()
    started = migrations_task_started(outputs)
    migrated = migrations_succeeded(outputs, started)
    planned = test_tenants_planned()
    tenants_ = test_tenants_created(planned)
    load = load_test_within_thresholds(outputs, shape, tenants_)
    metering = metering_exact(tenants_, load)
    quota = quota_enforced(outputs, tenants_)
    removed = restore(test_tenants_removed(planned), intent=planned, damage=tenants_)
    gate = usage_metering_gate(load, metering, quota)
    chain(shape, meter_settings_enabled(outputs), started, migrated, usage_tables_match_contract(migrated),
          planned)
    chain(tenants_, load, metering, quota, removed, gate)
    return Phase(gate=gate, restores=[removed])
