"""Phase 9's checks so far: the rules on plain values, then each check against the sandbox's real
services (moto's WAFv2, EC2, RDS, ECS, Secrets Manager and CloudWatch Logs; the application and the
local data services), each seen passing and then failing on the fault it is for, naming it."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.redact import redact
from bisman_ops.rollout import post_deploy as post
from bisman_ops.rollout.post_deploy import baseline, security, tls_grade
from tests.rollout.conftest import seeded_outputs


def body(task):
    """The phase module's own function under a ``@step`` task."""
    return task.function.__wrapped__


def group(group_id, *permissions, name="g"):
    return {"GroupId": group_id, "GroupName": name, "IpPermissions": list(permissions)}


def tcp(port, to=None, cidr=None, cidr6=None, source=None):
    perm = {"IpProtocol": "tcp", "FromPort": port, "ToPort": to or port}
    if cidr:
        perm["IpRanges"] = [{"CidrIp": cidr}]
    if cidr6:
        perm["Ipv6Ranges"] = [{"CidrIpv6": cidr6}]
    if source:
        perm["UserIdGroupPairs"] = [{"GroupId": source}]
    return perm


# -- the rules ------------------------------------------------------------------------------------


def test_data_ports_open_to_the_world_are_named_and_the_web_ports_are_not():
    groups = [group("sg-alb", tcp(443, cidr="0.0.0.0/0"), tcp(80, cidr6="::/0"), name="alb"),
              group("sg-redis", tcp(6000, 6999, cidr="0.0.0.0/0"), name="redis"),
              group("sg-ops", {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, name="ops"),
              group("sg-db", tcp(5432, source="sg-app"), name="db")]
    problems = security.security_group_problems(groups, "sg-db", ["sg-app"])
    assert problems == ["sg-redis (redis) opens 6379 to 0.0.0.0/0",
                        "sg-redis (redis) opens 6432 to 0.0.0.0/0",
                        "sg-ops (ops) opens 5432 to ::/0", "sg-ops (ops) opens 6379 to ::/0",
                        "sg-ops (ops) opens 6432 to ::/0"]


def test_the_database_group_admitting_anything_but_the_allowed_groups_is_named():
    groups = [group("sg-db", tcp(5432, source="sg-app"), tcp(5432, source="sg-bastion"),
                    tcp(5432, cidr="10.0.0.0/8"), name="db")]
    assert security.security_group_problems(groups, "sg-db", ["sg-app"]) == [
        "the database's group sg-db (db) admits sg-bastion, not an allowed source group",
        "the database's group sg-db (db) admits 10.0.0.0/8, not an allowed source group"]


def test_pgbouncer_in_its_own_group_admitted_by_the_database_passes_and_world_open_still_fails():
    """issue 23 point 12: the usual layout (app -> PgBouncer -> database, each in its own group)
    passes with PgBouncer's group allowed; a world-open data port fails, allowed group or not."""
    layout = [group("sg-db", tcp(5432, source="sg-app"), tcp(5432, source="sg-pgb"), name="db"),
              group("sg-pgb", tcp(6432, source="sg-app"), name="pgbouncer"),
              group("sg-redis", tcp(6379, source="sg-app"), name="redis")]
    assert security.security_group_problems(layout, "sg-db", ["sg-app", "sg-pgb"]) == []
    opened = [*layout[:1], group("sg-pgb", tcp(6432, source="sg-app"), tcp(6432, cidr6="::/0"),
                                 name="pgbouncer")]
    assert security.security_group_problems(opened, "sg-db", ["sg-app", "sg-pgb"]) == [
        "sg-pgb (pgbouncer) opens 6432 to ::/0"]


SECRET = {"JWT_SECRET": "jwt-4f1c9a7e2b", "DB_PASSWORD": "pw-77d0e1c3aa", "FLAG": "true"}


def test_a_secret_in_the_plaintext_environment_is_named_by_key_never_by_value():
    td = {"containerDefinitions": [{"name": "app", "environment": [
        {"name": "DATABASE_URL", "value": "postgres://app:pw-77d0e1c3aa@db/app"},
        {"name": "JWT_SECRET", "value": "x"}, {"name": "ENABLED", "value": "true"}],
        "secrets": [{"name": "DB_PASSWORD", "valueFrom": "arn:...:DB_PASSWORD::"}]}]}
    leaks = security.environment_leaks(td, SECRET)
    assert leaks == ["JWT_SECRET in the plaintext environment of container app (as JWT_SECRET, not a "
                     "secrets reference)",
                     "DB_PASSWORD in the plaintext environment of container app (as DATABASE_URL)"]
    with pytest.raises(CheckFailed) as failed:
        security.secret_leaks(SECRET, td, "/ecs/app", ["boot", "jwt-4f1c9a7e2b signed", "jwt-4f1c9a7e2b"])
    text = json.dumps(failed.value.as_dict())
    assert "JWT_SECRET in log group /ecs/app (2 events)" in text
    assert not any(value in text for value in SECRET.values() if len(value) >= security.MIN_SECRET_LEN)
    assert failed.value.measured["keys_not_referenced"] == ["FLAG", "JWT_SECRET"]


def test_health_waits_naming_each_failing_endpoint_its_status_and_body():
    poke = post.health_poke("https://api.x", [
        {"path": "/health", "status": 200, "ms": 3, "body": "ok"},
        {"path": "/api/health/redis", "status": 503, "ms": 9, "body": '{"redis": "down"}'}])
    assert not poke.done
    assert poke.waiting_for == "https://api.x: /api/health/redis -> 503 '{\"redis\": \"down\"}'"
    assert poke.measured["endpoints"] == {"/health": 200, "/api/health/redis": 503}


def test_only_loopback_counts_as_private_for_a_local_service():
    assert [security._loopback(a) for a in ("127.0.0.1", "::1", "0.0.0.0", "::", "10.0.0.5")] == [
        True, True, False, False, False]


# -- against the sandbox --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outputs(sandbox_env):
    return seeded_outputs(sandbox_env)


def test_the_application_is_healthy_through_the_load_balancers_address_and_a_dead_one_is_named(outputs):
    poke = body(post.healthy_through_load_balancer)(outputs)
    assert poke.done, poke.waiting_for
    assert set(poke.measured["endpoints"].values()) == {200}
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{unused.getsockname()[1]}"
    poke = body(post.healthy_through_load_balancer)({**outputs, "api_base_url": dead})
    assert not poke.done and f"{dead}: /health -> no answer (ConnectionError)" in poke.waiting_for


def test_the_waf_is_found_on_the_load_balancer_and_a_disassociated_one_fails(sandbox_env, outputs):
    from bisman_sandbox import aws

    measured = body(post.waf_active)(outputs)
    assert measured["rules"] and measured["web_acl"]
    wafv2 = aws.client(sandbox_env, "wafv2")
    wafv2.disassociate_web_acl(ResourceArn=outputs["alb_arn"])
    try:
        with pytest.raises(CheckFailed, match="no web ACL is associated with the load balancer"):
            body(post.waf_active)(outputs)
    finally:
        wafv2.associate_web_acl(WebACLArn=outputs["waf_web_acl_arn"], ResourceArn=outputs["alb_arn"])
    assert body(post.waf_active)(outputs)["web_acl"] == measured["web_acl"]


def test_security_groups_pass_and_redis_opened_to_the_world_fails_naming_it(sandbox_env, outputs):
    from bisman_sandbox import aws

    measured = body(post.security_groups_closed)(outputs)
    assert measured["groups_checked"] >= 5 and measured["application_groups"]
    ec2, r = aws.client(sandbox_env, "ec2"), aws.seeded(sandbox_env)
    opened = [{"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    ec2.authorize_security_group_ingress(GroupId=r.redis_security_group_id, IpPermissions=opened)
    try:
        with pytest.raises(CheckFailed) as failed:
            body(post.security_groups_closed)(outputs)
        assert f"{r.redis_security_group_id} (" in str(failed.value)
        assert "opens 6379 to 0.0.0.0/0" in str(failed.value)
    finally:
        ec2.revoke_security_group_ingress(GroupId=r.redis_security_group_id, IpPermissions=opened)
    body(post.security_groups_closed)(outputs)


def test_the_database_admitting_pgbouncers_group_passes_and_an_unknown_source_group_fails(sandbox_env,
                                                                                         outputs):
    """issue 23 point 12, on moto: the seeded layout (the database's group admits the application's
    and PgBouncer's) passes with Terraform's allow-list; a group it does not list fails, named."""
    from bisman_sandbox import aws

    ec2, r = aws.client(sandbox_env, "ec2"), aws.seeded(sandbox_env)
    measured = body(post.security_groups_closed)(outputs)
    assert r.pgbouncer_security_group_id in measured["database_client_groups"]
    # The allow-list is what admits PgBouncer: without the output its group is refused.
    without = {k: v for k, v in outputs.items() if k != security.DB_CLIENT_GROUPS_OUTPUT}
    with pytest.raises(CheckFailed, match=f"admits {r.pgbouncer_security_group_id}, not an allowed"):
        body(post.security_groups_closed)(without)
    with pytest.raises(CheckFailed, match="Terraform output db_client_security_group_ids"):
        body(post.security_groups_closed)({**outputs, security.DB_CLIENT_GROUPS_OUTPUT: "sg-1,sg-2"})

    rogue = ec2.create_security_group(GroupName=f"rogue-{uuid.uuid4().hex[:8]}", Description="test",
                                      VpcId=r.vpc_id)["GroupId"]
    admitted = [{"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                 "UserIdGroupPairs": [{"GroupId": rogue}]}]
    ec2.authorize_security_group_ingress(GroupId=r.db_security_group_id, IpPermissions=admitted)
    try:
        with pytest.raises(CheckFailed) as failed:
            body(post.security_groups_closed)(outputs)
        assert failed.value.seen == (f"the database's group {r.db_security_group_id} "
                                     f"({aws.names().db_security_group_name}) admits {rogue}, "
                                     "not an allowed source group")
    finally:
        ec2.revoke_security_group_ingress(GroupId=r.db_security_group_id, IpPermissions=admitted)
        ec2.delete_security_group(GroupId=rogue)
    body(post.security_groups_closed)(outputs)


def test_the_database_is_not_public_and_a_public_replica_or_a_service_on_every_address_fails(
        sandbox_env, outputs):
    from bisman_sandbox import aws
    from bisman_sandbox.exposure_impl import SandboxListenAddresses

    measured = body(post.database_not_public)(outputs)
    assert measured["listen_addresses"]["pgbouncer"] == ["127.0.0.1"]
    assert measured["listen_addresses"]["redis_primary"] == ["127.0.0.1"]
    rds = aws.client(sandbox_env, "rds")
    replica = outputs["db_replica_identifier"]
    rds.modify_db_instance(DBInstanceIdentifier=replica, PubliclyAccessible=True, ApplyImmediately=True)
    try:
        with pytest.raises(CheckFailed, match=f"the replica {replica} is publicly accessible"):
            body(post.database_not_public)(outputs)
    finally:
        rds.modify_db_instance(DBInstanceIdentifier=replica, PubliclyAccessible=False, ApplyImmediately=True)
    with socket.socket() as rogue:
        rogue.bind(("0.0.0.0", 0))
        rogue.listen()
        found = SandboxListenAddresses({"rogue_db": rogue.getsockname()[1]})
        with pytest.raises(CheckFailed, match=r"rogue_db listens on 0\.0\.0\.0, not loopback"):
            security.database_exposure(rds, outputs, found)


def test_no_secret_in_the_logs_or_environment_and_one_written_to_the_log_is_named_by_key(
        sandbox_env, outputs, monkeypatch):
    from bisman_ops.rollout import preflight
    from bisman_sandbox import aws

    monkeypatch.setattr(post, "context", lambda: {"params": {"secret_scan_window_minutes": 60}})
    measured = body(post.secrets_not_leaked)(outputs)
    assert measured["leaks"] == [] and "JWT_SECRET" in measured["keys_compared"]
    # The report shows which keys were compared: the names survive its redaction.
    assert redact(measured)["keys_compared"] == measured["keys_compared"]
    logs = aws.client(sandbox_env, "logs")
    secret = preflight.read_app_secret(aws.client(sandbox_env, "secretsmanager"), outputs["app_secrets_arn"])
    stream = f"test-leak-{uuid.uuid4().hex[:8]}"
    logs.create_log_stream(logGroupName=outputs["app_log_group"], logStreamName=stream)
    try:
        logs.put_log_events(logGroupName=outputs["app_log_group"], logStreamName=stream, logEvents=[
            {"timestamp": int(time.time() * 1000), "message": f"debug: signing with {secret['JWT_SECRET']}"}])
        with pytest.raises(CheckFailed) as failed:
            body(post.secrets_not_leaked)(outputs)
        shown = json.dumps(failed.value.as_dict())
        assert f"JWT_SECRET in log group {outputs['app_log_group']} (1 event)" in shown
        assert secret["JWT_SECRET"] not in shown
    finally:
        logs.delete_log_stream(logGroupName=outputs["app_log_group"], logStreamName=stream)
    assert body(post.secrets_not_leaked)(outputs)["leaks"] == []


class SmallPages:
    """The real moto client, asked for two events a page: many pages from a small log group."""

    def __init__(self, logs):
        self.logs, self.calls = logs, 0

    def filter_log_events(self, **kwargs):
        self.calls += 1
        return self.logs.filter_log_events(**kwargs, limit=2)


@pytest.fixture
def long_log(sandbox_env):
    """A log group of its own with 120 recent events (60 pages of two, more than the old 50-page
    stop), the last one holding the JWT secret."""
    from bisman_sandbox import aws

    logs, group = aws.client(sandbox_env, "logs"), f"/test/leak-scan-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="app")
    start = int(time.time() * 1000) - 120_000
    events = [{"timestamp": start + i * 10, "message": f"request {i} ok"} for i in range(119)]
    events.append({"timestamp": start + 1190, "message": f"debug: signing with {SECRET['JWT_SECRET']}"})
    logs.put_log_events(logGroupName=group, logStreamName="app", logEvents=events)
    yield logs, group
    logs.delete_log_group(logGroupName=group)


def test_the_leak_scan_reads_every_page_of_the_window_and_finds_a_leak_on_the_last(long_log):
    """issue 23 point 9: the scan stopped after 50 pages and said "no leak"."""
    logs, group = long_log
    paged = SmallPages(logs)
    with pytest.raises(CheckFailed) as failed:
        security.secret_leaks(SECRET, {}, group, security.recent_log_messages(paged, group, 600))
    assert paged.calls == 60
    assert failed.value.measured["log_events_scanned"] == 120
    assert f"JWT_SECRET in log group {group} (1 event)" in failed.value.seen


def test_a_leak_scan_cut_short_by_its_page_limit_or_time_budget_fails_saying_how_far_it_got(long_log):
    logs, group = long_log
    with pytest.raises(CheckFailed) as by_pages:
        list(security.recent_log_messages(SmallPages(logs), group, 600, max_pages=5, clock=lambda: 0))
    assert by_pages.value.seen == "incomplete: 5 pages, 10 events read in 0 s and more pages left"
    assert by_pages.value.expected == "every event of the last 10 min read within 300 s or 5 pages"
    # A clock that moves 100 s a look: the budget of 250 s is spent after the third page.
    ticks = iter(range(0, 10_000, 100))
    with pytest.raises(CheckFailed) as by_time:
        list(security.recent_log_messages(SmallPages(logs), group, 600, budget_s=250,
                                          clock=lambda: next(ticks)))
    assert by_time.value.seen == "incomplete: 3 pages, 6 events read in 300 s and more pages left"
    assert by_time.value.measured["budget_s"] == 250
    assert by_time.value.checked == f"scan of log group {group} for secrets"


# -- TLS, graded ----------------------------------------------------------------------------------


@pytest.fixture
def weak_listener(sandbox_env):
    """A second listener in front of the application with a weak profile, stopped afterwards."""
    import subprocess

    from bisman_sandbox import tls_listener
    from bisman_sandbox.process import port_open, wait_until

    started = []

    def serve(profile: str) -> int:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        proc = subprocess.Popen(tls_listener.command(sandbox_env, port, profile))
        started.append(proc)
        wait_until(lambda: port_open(port), timeout=30, what=f"the {profile} TLS listener")
        return port

    yield serve
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def scan(sandbox_env, port, server_name=None):
    from bisman_ops.clients import tls_scanner
    from bisman_sandbox import tls_listener
    from bisman_sandbox.aws import SANDBOX_DOMAIN

    return tls_scanner.scan("127.0.0.1", port, server_name or SANDBOX_DOMAIN,
                            str(tls_listener.cert_dir(sandbox_env) / "root.pem"))


def test_the_sandboxs_https_listener_grades_a_plus_on_a_local_ca_chain(sandbox_env, monkeypatch):
    from bisman_sandbox.aws import SANDBOX_DOMAIN

    monkeypatch.setattr(post, "context", lambda: {"params": {"tls_min_grade": "A"}})
    measured = body(post.tls_graded)({"domain_name": SANDBOX_DOMAIN})
    assert measured["grade"] == "A+", measured
    assert measured["chain_trusted"] and measured["hostname_matches"] and measured["leaf_days"] <= 90
    assert set(measured["protocols"]) == {"TLSv1.2", "TLSv1.3"}
    assert measured["mozilla_intermediate_issues"] == {}  # what sslyze finds against Mozilla's config


@pytest.mark.parametrize(("profile", "grade", "reasons"), [
    ("legacy", "B", ["TLS 1.0 or 1.1 offered"]),
    ("cbc", "B", ["no AEAD suite (GCM, ChaCha20-Poly1305, CCM) offered", "TLS 1.3 not offered"]),
])
def test_a_weak_configuration_drops_the_grade_naming_why(sandbox_env, weak_listener, profile, grade, reasons):
    summary = scan(sandbox_env, weak_listener(profile))
    assert summary["mozilla_intermediate_issues"], summary  # reported beside the grade
    verdict = tls_grade.grade(summary)
    assert verdict["grade"] == grade and set(reasons) <= set(verdict["caps"]), verdict
    with pytest.raises(CheckFailed) as failed:
        post.tls_verdict(summary, "A")
    assert f"seen {grade} (" in str(failed.value) and reasons[0] in str(failed.value)


def test_a_certificate_for_another_name_fails(sandbox_env):
    from bisman_sandbox.context import SandboxContext

    summary = scan(sandbox_env, SandboxContext.from_env().port("tls"), server_name="api.other.example")
    assert not summary["hostname_matches"]
    assert tls_grade.grade(summary)["grade"] == "F"



# -- performance baseline -------------------------------------------------------------------------

HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.0100,0.0001,0.0000,0.0000,0.0099,0.0000,200,0.0010
0.0200,0.0001,0.0000,0.0000,0.0199,0.0000,200,0.0020
0.0300,0.0001,0.0000,0.0000,0.0299,0.0000,503,0.0100
0.0400,0.0001,0.0000,0.0000,0.0399,0.0000,200,0.0600
"""


def test_a_hey_run_is_summarised_with_its_errors_and_the_requests_that_got_no_answer():
    run = baseline.parse_hey_csv(HEY_CSV, expected=5)
    assert (run.requests, run.errors) == (5, 2)  # one 503, one never answered
    assert (run.p50_ms, run.p95_ms, run.p99_ms) == (20.0, 40.0, 40.0)
    assert run.rps == 40.0  # 4 answers by 0.1 s


def test_hey_counts_what_it_sends_when_the_requests_do_not_divide_by_the_concurrency():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = baseline.hey(f"http://127.0.0.1:{server.server_address[1]}/", 150, 20)
    finally:
        server.shutdown()
    assert (run.requests, run.errors) == (140, 0)  # 20 workers x 7, none unanswered
    with pytest.raises(ValueError, match=r"at least as many requests as concurrency \(10 < 20\)"):
        baseline.requests_sent(10, 20)


def test_slower_is_a_regression_only_when_both_practical_and_significant():
    base = [10.0, 10.2, 9.9, 10.1, 10.3]
    assert baseline.compare([12.0, 12.5, 12.2, 11.9, 12.4], base, 1.1, 0.01)["regressed"] is True
    assert baseline.compare([10.5, 10.6, 10.4, 10.7, 10.5], base, 1.1, 0.01)["regressed"] is False  # small
    mixed = baseline.compare([13.0, 9.0, 14.0, 9.5, 12.0], base, 1.1, 0.01)  # 1.18x median, overlapping
    assert mixed["median_p95_ratio"] > 1.1 and mixed["mann_whitney_p"] >= 0.01 and not mixed["regressed"]


def test_the_first_baseline_is_recorded_and_says_so():
    runs = [baseline.LoadRun(100, 0, 1.0, 2.0, 3.0, 500.0)] * 5
    conf = {"perf_regression_ratio": 1.1, "perf_regression_alpha": 0.01}
    assert post.baseline_verdict(runs, None, conf)["baseline"] == "recorded (the first for this environment)"
    failing = [baseline.LoadRun(100, 3, 1.0, 2.0, 3.0, 500.0)] * 5
    with pytest.raises(CheckFailed, match="15 failed requests"):
        post.baseline_verdict(failing, None, conf)


@pytest.fixture
def own_baseline(monkeypatch):
    """The step's baseline under a key of the test's own (the rehearsal's is left alone), removed."""
    from bisman_ops.clients import s3

    key = f"baselines/test-{uuid.uuid4().hex[:8]}/post_deploy_performance.json"
    monkeypatch.setattr(post, "baseline_key", lambda environment: key)
    yield key
    s3.hook().get_conn().delete_object(Bucket="bisman-erp-staging-terraform-state", Key=key)


def test_the_baseline_is_stored_the_same_build_is_no_regression_and_a_slower_one_is(
        sandbox_env, outputs, own_baseline, monkeypatch):
    from bisman_ops.rollout.settings import RolloutSettings
    from bisman_sandbox import app_server
    from bisman_sandbox.rollout_conf import rollout_conf

    conf = {**{k: p.value for k, p in post.PARAMS.items()}, "perf_requests": 150, "perf_concurrency": 20,
            "perf_regression_ratio": rollout_conf(sandbox_env)["perf_regression_ratio"]}
    monkeypatch.setattr(post, "context", lambda: {"params": conf})
    form = {**rollout_conf(sandbox_env), "app_image": "bisman-erp:perf-a"}
    settings = RolloutSettings.from_params(form).as_dict()
    first = body(post.performance_baseline)(settings, outputs)
    assert first["baseline"] == "recorded (the first for this environment)" and len(first["runs"]) == 5
    assert first["stored"].endswith(own_baseline) and first["errors"] == 0
    again = body(post.performance_baseline)(settings, outputs)
    assert again["regressed"] is False and again["baseline_build"] == "bisman-erp:perf-a", again
    slower = app_server.latency_file(sandbox_env)
    slower.write_text("400")  # well past the runs' own spread on a loaded machine, and the sandbox's 3x
    try:
        with pytest.raises(CheckFailed) as failed:
            body(post.performance_baseline)({**settings, "app_image": "bisman-erp:perf-b"}, outputs)
    finally:
        slower.unlink()
    assert failed.value.measured["regressed"] and failed.value.measured["mann_whitney_p"] < 0.01
    assert "the baseline is kept" in str(failed.value)
    kept = body(post.performance_baseline)(settings, outputs)  # compared with `again`, not the slow run
    assert kept["baseline_build"] == "bisman-erp:perf-a"
