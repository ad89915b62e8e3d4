"""Phase 7 without a scheduler: the plan and its limits, the steady-state verdict, the watch's
stop condition (fake clock), the abort and the restore of a failing drill; then each drill for
real against the sandbox (replica stopped, Sentinel failover, a gunicorn worker killed), leaving
it as it was found, and a stop condition that fires mid-drill and aborts it."""

from __future__ import annotations

import time

import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollout import chaos
from bisman_ops.rollout.chaos import faults, hypothesis
from tests.rollout.conftest import seeded_outputs

STAGING = {"environment": "staging", "replica_lag_threshold_s": 1.0}
PROD = {"environment": "prod", "replica_lag_threshold_s": 1.0}


def body(task):
    """The phase module's own function under a ``@step`` task (``functools.wraps`` keeps it)."""
    return task.function.__wrapped__


# -- the plan ---------------------------------------------------------------------------------------


def test_staging_runs_the_drills_by_default_and_prod_only_when_asked_and_approved():
    assert chaos.plan(STAGING, {})["enabled"] and chaos.plan(STAGING, {})["drills"] == list(chaos.DRILLS)
    assert not chaos.plan(STAGING, {})["approval_needed"]
    assert chaos.plan(STAGING, {"chaos_drills": False})["drills"] == []
    assert not chaos.plan(PROD, {})["enabled"] and chaos.plan(PROD, {})["drills"] == []
    asked = chaos.plan(PROD, {"chaos_drills": True})
    assert asked["enabled"] and asked["approval_needed"] and asked["drills"] == list(chaos.DRILLS)
    assert "prod" in asked["subject"] and "aborts a drill" in asked["body"]


def test_a_stop_condition_that_could_never_fire_before_the_timeout_is_refused():
    with pytest.raises(CheckFailed, match="chaos_stop_after_seconds"):
        chaos.limits({"chaos_stop_after_seconds": 200, "chaos_recovery_timeout_seconds": 180})
    with pytest.raises(CheckFailed, match="chaos_stop_error_ratio"):
        chaos.limits({"chaos_stop_error_ratio": 1.5})


def test_prod_drills_need_a_recorded_approval():
    needed = chaos.plan(PROD, {"chaos_drills": True})
    with pytest.raises(CheckFailed, match="chaos drills in prod"):
        body(chaos.drills_approved)(needed, None)
    with pytest.raises(CheckFailed):
        body(chaos.drills_approved)(needed, {"approved": False, "chosen": ["Reject"]})
    ok = body(chaos.drills_approved)(needed, {"approved": True, "responded_by_user": "ops"})
    assert ok["approved_by"] == "ops"
    assert body(chaos.drills_approved)(chaos.plan(STAGING, {}), None)["approval_needed"] is False


# -- the hypothesis ----------------------------------------------------------------------------------


class Answer:
    def __init__(self, code):
        self.status_code = code


def test_the_probe_counts_refused_connections_and_server_errors_as_errors():
    answers = iter([200, 200, 200] + [200] * 7 + [500, "refused", 200])

    def http(method, path, headers):
        code = next(answers)
        if code == "refused":
            raise ConnectionRefusedError("no worker")
        return Answer(code)

    got = hypothesis.probe(http, "token", 1, requests=10)
    assert got["health"] == {p: "200" for p in hypothesis.HEALTH_PATHS}
    assert got["statuses"] == {"200": 8, "500": 1, "ConnectionRefusedError": 1}
    # Answered in-process: each look takes microseconds, well under a second.
    assert got["error_ratio"] == 0.2 and 0 <= got["p50_ms"] <= got["p95_ms"] < 1000


def test_the_steady_state_names_what_does_not_hold():
    measured = {"health": {"/health": "200", "/api/health/redis": "503"}, "error_ratio": 0.1,
                "statuses": {"200": 9, "500": 1}, "p95_ms": 2500.0}
    firing = [{"labels": {"alertname": "Watchdog"}}, {"labels": {"alertname": "BismanRedisDown"}}]
    got = hypothesis.problems(measured, hypothesis.drill_alerts(firing), hypothesis.Limits())
    assert got == ["GET /api/health/redis answered 503", "error ratio 0.1 > 0.0 ({'200': 9, '500': 1})",
                   "p95 2500.0 ms > 1000 ms", "alert BismanRedisDown firing"]
    calm = {"health": {"/health": "200"}, "error_ratio": 0.0, "statuses": {"200": 10}, "p95_ms": 20.0}
    assert hypothesis.problems(calm, hypothesis.drill_alerts(firing[:1]), hypothesis.Limits()) == []


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def rounds(ratios):
    it = iter(ratios)
    return lambda: {"requests": 10, "error_ratio": next(it)}


def test_the_watch_ends_when_the_system_copes_and_the_probe_is_calm():
    clock, coped = Clock(), iter([False, False, True, True])
    got = hypothesis.watch(lambda: (next(coped), {"n": 1}), rounds([1.0, 0.0, 0.8, 0.0]),
                           hypothesis.Limits(stop_after_s=10), clock, clock.sleep)
    assert got["outcome"] == "coped" and not got["stop_condition_fired"]
    assert got["probe_rounds"] == 4 and got["errors"] == 18 and got["worst_error_ratio"] == 1.0
    assert got["seconds"] == 3.0


def test_the_stop_condition_fires_after_errors_without_a_break_but_not_for_a_short_spike():
    limits = hypothesis.Limits(stop_error_ratio=0.5, stop_after_s=3, recovery_timeout_s=60)
    clock = Clock()
    got = hypothesis.watch(lambda: (False, {}), rounds([0.9, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9]), limits,
                           clock, clock.sleep)
    assert got["outcome"] == "stop_condition" and got["stop_condition_fired"]
    assert got["probe_rounds"] == 6  # the spike at 0 s was broken at 1 s; 2..5 s is 3 s without a break
    clock = Clock()
    got = hypothesis.watch(lambda: (False, {}), rounds([0.0] * 100), limits, clock, clock.sleep)
    assert got["outcome"] == "timed_out" and got["seconds"] == 60.0


# -- a failing drill is aborted and restored -----------------------------------------------------------


class FakeFault:
    name = "fake"
    blast_radius = "nothing real"

    def __init__(self, inject_fails=False):
        self.calls: list[str] = []
        self.inject_fails = inject_fails

    def found(self):
        return {"workers": 3}

    def inject(self):
        self.calls.append("inject")
        if self.inject_fails:
            raise RuntimeError("half done")
        return {"fault": "fake"}

    def coped(self, injected, tenant_id):
        self.calls.append("coped")
        return False, {"still": "broken"}

    def restore(self, found):
        self.calls.append(f"restore {found}")
        return {"restored": True}


@pytest.fixture
def fake(monkeypatch):
    f = FakeFault()
    monkeypatch.setattr(faults, "fault", lambda drill, outputs: f)
    monkeypatch.setattr(chaos, "_probe", lambda outputs, tenant, requests=0: {"requests": 5,
                                                                             "error_ratio": 1.0})
    monkeypatch.setattr(hypothesis, "WATCH_INTERVAL_S", 0.01)
    return f


def test_a_stop_condition_mid_drill_ends_the_fault_at_once_and_fails_with_the_journal(fake):
    drill_plan = chaos.plan(STAGING, {"chaos_stop_after_seconds": 0})
    with pytest.raises(CheckFailed) as failed:
        body(chaos.fault_coped_with)("app_task_killed", drill_plan, {},
                                     {"tenant_id": 1, "found": {"w": 3}}, {"fault": "fake"})
    assert "stop condition fired" in failed.value.seen
    journal = failed.value.measured
    assert journal["stop_condition_fired"] and journal["aborted"] == {"restored": True}
    assert fake.calls == ["coped", "restore {'w': 3}"]  # aborted after the first round, not at the teardown


def test_a_drill_never_coped_with_is_aborted_at_the_recovery_timeout(fake, monkeypatch):
    monkeypatch.setattr(chaos, "_probe", lambda outputs, tenant, requests=0: {"requests": 5,
                                                                             "error_ratio": 0.0})
    drill_plan = chaos.plan(STAGING, {"chaos_stop_after_seconds": 0,
                                      "chaos_recovery_timeout_seconds": 0.05})
    with pytest.raises(CheckFailed, match=r"not coped with after 0\.05 s"):
        body(chaos.fault_coped_with)("redis_failover", drill_plan, {}, {"tenant_id": 1, "found": {}}, {})
    assert fake.calls[-1] == "restore {}" and "coped" in fake.calls


def test_a_half_injected_fault_is_restored_before_the_failure_is_raised(monkeypatch):
    f = FakeFault(inject_fails=True)
    monkeypatch.setattr(faults, "fault", lambda drill, outputs: f)
    with pytest.raises(RuntimeError, match="half done"):
        body(chaos.fault_injected)("replica_failure", {}, {"found": {"replica": "r"}})
    assert f.calls == ["inject", "restore {'replica': 'r'}"]


def test_aws_faults_are_the_default_and_the_sandbox_registers_its_own():
    outputs = {"db_replica_identifier": "r"}
    assert isinstance(faults.fault("redis_failover", outputs, {}), faults.ElastiCacheFailover)
    assert isinstance(faults.fault("app_task_killed", outputs, {}), faults.EcsTaskStop)
    assert isinstance(faults.fault("replica_failure", outputs, {}), faults.ReplicaFailure)
    env = {"BISMAN_IMPL_REDIS_FAILOVER": "bisman_sandbox.chaos_impl:SandboxRedisFailover"}
    assert type(faults.fault("redis_failover", outputs, env)).__name__ == "SandboxRedisFailover"
    with pytest.raises(ValueError, match="unknown chaos drill 'disk_full'"):
        faults.fault("disk_full", outputs, {})


def test_the_elasticache_fault_fails_over_the_node_group_and_reads_the_new_primary(monkeypatch):
    import boto3
    from botocore.stub import Stubber

    ec = boto3.client("elasticache", region_name="eu-west-1", aws_access_key_id="x",
                      aws_secret_access_key="x")
    stub = Stubber(ec)

    def group(primary):
        members = [{"CacheClusterId": c, "CurrentRole": "primary" if c == primary else "replica"}
                   for c in ("redis-001", "redis-002")]
        groups = [{"Status": "available", "NodeGroups": [{"NodeGroupMembers": members}]}]
        return {"ReplicationGroups": groups}

    stub.add_response("describe_replication_groups", group("redis-001"), {"ReplicationGroupId": "g"})
    stub.add_response("test_failover", {"ReplicationGroup": {}},
                      {"ReplicationGroupId": "g", "NodeGroupId": "0001"})
    stub.add_response("describe_replication_groups", group("redis-002"), {"ReplicationGroupId": "g"})
    monkeypatch.setattr(faults.rr, "aws", lambda service: ec)
    monkeypatch.setattr(faults, "_status", lambda method, path: 200)
    fault = faults.ElastiCacheFailover({"redis_replication_group_id": "g"})
    with stub:
        injected = fault.inject()
        coped, state = fault.coped(injected, 1)
    assert injected["old_primary"] == "redis-001" and coped and state["primary"] == "redis-002"


def test_the_ecs_fault_stops_one_task_and_copes_once_a_new_one_runs_with_healthy_targets(monkeypatch):
    class Ecs:
        def __init__(self):
            self.tasks, self.stopped = ["t1", "t2"], []

        def list_tasks(self, **kw):
            return {"taskArns": list(self.tasks)}

        def stop_task(self, cluster, task, reason):
            self.stopped.append(task)
            self.tasks.remove(task)

        def describe_services(self, **kw):
            return {"services": [{"runningCount": len(self.tasks), "desiredCount": 2}]}

    class Elb:
        def describe_target_groups(self, LoadBalancerArn):
            return {"TargetGroups": [{"TargetGroupArn": "tg"}]}

        def describe_target_health(self, TargetGroupArn):
            return {"TargetHealthDescriptions": [{"TargetHealth": {"State": "healthy"}}]}

    ecs, elb = Ecs(), Elb()
    monkeypatch.setattr(faults.rr, "aws", lambda service: ecs if service == "ecs" else elb)
    fault = faults.EcsTaskStop({"ecs_cluster_name": "c", "ecs_service_name": "s", "alb_arn": "a"})
    injected = fault.inject()
    assert ecs.stopped == ["t1"] and not fault.coped(injected, 1)[0]  # one short of desired
    ecs.tasks.append("t3")  # ECS started the replacement
    assert fault.coped(injected, 1)[0] and fault.restore({"desired": 2})["running"] == 2


# -- the drills for real, against the sandbox --------------------------------------------------------


@pytest.fixture(scope="module")
def outputs(sandbox_env):
    return seeded_outputs(sandbox_env)


def poke_until_done(task, *args, timeout: float = 120):
    deadline = time.monotonic() + timeout
    poke = body(task)(*args)
    while not poke.done and time.monotonic() < deadline:
        time.sleep(2)
        poke = body(task)(*args)
    assert poke.done, poke.waiting_for
    return poke


def run_drill(drill, drill_plan, outputs):
    before = poke_until_done(chaos.steady_state_before, drill, drill_plan, outputs).measured
    injected = body(chaos.fault_injected)(drill, outputs, before)
    try:
        during = body(chaos.fault_coped_with)(drill, drill_plan, outputs, before, injected)
    finally:
        restored = body(chaos.fault_restored)(drill, outputs, before)
    after = poke_until_done(chaos.steady_state_after, drill, drill_plan, STAGING, outputs, before,
                            injected, during, restored)
    return after.measured


def test_the_redis_drill_fails_over_for_real_and_fails_back_to_the_master_it_found(
        sandbox_env, outputs):
    from bisman_sandbox import redis

    found = redis.master_address(sandbox_env)
    journal = run_drill("redis_failover", chaos.plan(STAGING, {}), outputs)
    assert journal["method"]["old_primary"] == f"{found[0]}:{found[1]}" != journal["method"]["new_primary"]
    assert journal["during"]["outcome"] == "coped" and journal["during"]["state"]["health_redis"] == 200
    assert journal["restore"]["failed_back"] and not journal["stop_condition_fired"]
    assert redis.master_address(sandbox_env) == found and redis.healthy(sandbox_env)
    assert journal["hypothesis_after"]["error_ratio"] == 0.0


def test_the_task_killed_drill_kills_a_real_worker_and_its_supervisor_replaces_it(
        sandbox_env, outputs):
    from bisman_sandbox import app_server

    workers = set(app_server.worker_pids(sandbox_env))
    journal = run_drill("app_task_killed", chaos.plan(STAGING, {}), outputs)
    killed = int(journal["method"]["stopped"])
    now = set(app_server.worker_pids(sandbox_env))
    assert killed in workers and killed not in now and len(now) == len(workers) == app_server.WORKERS
    timeout = chaos.plan(STAGING, {})["limits"]["recovery_timeout_s"]
    assert journal["during"]["outcome"] == "coped" and 0 <= journal["recovery_s"] < timeout
    found = journal["hypothesis_before"]["found"]
    assert found == {"workers": app_server.WORKERS, "desired": app_server.WORKERS}


def test_the_replica_drill_reads_from_the_primary_meanwhile_and_leaves_the_replica_in_sync(
        sandbox_env, outputs):
    from bisman_sandbox import postgres

    journal = run_drill("replica_failure", chaos.plan(STAGING, {}), outputs)
    # The product's RDS reboot, which the sandbox's AWS endpoint gives its effect (the local replica
    # stopped, then back and streaming).
    assert journal["method"]["control"] == "rds-reboot"
    assert journal["method"]["status_after_reboot_call"] == "rebooting"
    assert journal["restore"]["status"] == "available" and postgres.replica_streaming(sandbox_env)
    during = journal["during"]["state"]
    assert during["read_route"] == "fallback" and during["read_status"] == 200
    assert journal["after_problems"] == [] and postgres.replica_lag_seconds(sandbox_env) < 1.0


def test_a_stop_condition_that_fires_mid_drill_aborts_it_and_the_sandbox_is_restored(
        sandbox_env, outputs):
    """The application answers 500 to reads while a worker is killed: errors without a break for
    longer than the stop condition allows, so the drill is aborted, not watched to its timeout."""
    from bisman_sandbox import app_server
    from bisman_sandbox.monitoring_impl import SandboxAppFault

    drill_plan = chaos.plan(STAGING, {"chaos_stop_after_seconds": 2})
    before = poke_until_done(chaos.steady_state_before, "app_task_killed", drill_plan, outputs).measured
    fault = SandboxAppFault(sandbox_env)
    fault.start()
    try:
        injected = body(chaos.fault_injected)("app_task_killed", outputs, before)
        started = time.monotonic()
        with pytest.raises(CheckFailed) as failed:
            body(chaos.fault_coped_with)("app_task_killed", drill_plan, outputs, before, injected)
        journal = failed.value.measured
    finally:
        fault.stop()
        body(chaos.fault_restored)("app_task_killed", outputs, before)
    assert "stop condition fired" in failed.value.seen and journal["stop_condition_fired"]
    assert journal["worst_error_ratio"] == 1.0 and journal["aborted"]["running"] == app_server.WORKERS
    assert time.monotonic() - started < drill_plan["limits"]["recovery_timeout_s"]
    assert len(app_server.worker_pids(sandbox_env)) == app_server.WORKERS
