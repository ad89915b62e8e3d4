"""The sandbox's AWS control plane: a real moto server, seeded as Terraform would have left it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from botocore.exceptions import ClientError

from bisman_ops import config
from bisman_ops.clients import aws as aws_client
from bisman_sandbox import aws, context, replica_lag_publisher
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import stop_process, wait_until

pytestmark = pytest.mark.timeout(180)
N = aws.names()
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def ctx() -> SandboxContext:
    c = SandboxContext.from_env()
    aws.up(c)
    return c


@pytest.fixture(scope="module")
def res(ctx) -> aws.SeededResources:
    return aws.seeded(ctx)


def ingress(ctx, group_id: str) -> list[dict]:
    return aws.client(ctx, "ec2").describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0][
        "IpPermissions"
    ]


def test_data_tier_security_groups_admit_only_the_app_and_pgbouncer_groups_on_their_port(ctx, res):
    for group_id, port, sources in (
        (res.db_security_group_id, 5432, {res.app_security_group_id, res.pgbouncer_security_group_id}),
        (res.redis_security_group_id, 6379, {res.app_security_group_id}),
        (res.pgbouncer_security_group_id, 6432, {res.app_security_group_id}),
    ):
        perms = ingress(ctx, group_id)
        assert [(p["FromPort"], p["ToPort"]) for p in perms] == [(port, port)]
        assert {g["GroupId"] for g in perms[0]["UserIdGroupPairs"]} == sources
        assert perms[0].get("IpRanges", []) == []
        assert perms[0].get("Ipv6Ranges", []) == []


def test_app_security_group_is_reachable_only_from_the_load_balancer(ctx, res):
    perms = ingress(ctx, res.app_security_group_id)
    assert [g["GroupId"] for p in perms for g in p["UserIdGroupPairs"]] == [res.alb_security_group_id]
    assert all(not p.get("IpRanges") for p in perms)


def test_network_has_two_private_and_two_public_subnets_in_the_vpc(ctx, res):
    subnets = aws.client(ctx, "ec2").describe_subnets(
        SubnetIds=[*res.private_subnet_ids, *res.public_subnet_ids]
    )["Subnets"]
    assert {s["VpcId"] for s in subnets} == {res.vpc_id}
    assert {s["AvailabilityZone"] for s in subnets} == {"us-east-1a", "us-east-1b"}


def test_rds_primary_is_postgres_r6g_large_with_its_subnet_parameter_and_security_groups(ctx, res):
    db = aws.client(ctx, "rds").describe_db_instances(DBInstanceIdentifier=N.db_instance_identifier)[
        "DBInstances"
    ][0]
    assert db["Engine"] == "postgres"
    assert db["DBInstanceClass"] == "db.r6g.large"
    assert db["DBInstanceStatus"] == "available"
    assert db["DBName"] == N.db_name == context.DB_NAME
    assert db["DBSubnetGroup"]["DBSubnetGroupName"] == res.db_subnet_group_name
    assert {s["SubnetIdentifier"] for s in db["DBSubnetGroup"]["Subnets"]} == set(res.private_subnet_ids)
    assert [g["DBParameterGroupName"] for g in db["DBParameterGroups"]] == [res.db_parameter_group_name]
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [res.db_security_group_id]
    assert db["StorageEncrypted"] is True
    assert db["ReadReplicaDBInstanceIdentifiers"] == [N.db_replica_identifier]


def test_rds_read_replica_follows_the_primary(ctx):
    replica = aws.client(ctx, "rds").describe_db_instances(DBInstanceIdentifier=N.db_replica_identifier)[
        "DBInstances"
    ][0]
    assert replica["ReadReplicaSourceDBInstanceIdentifier"] == N.db_instance_identifier
    assert replica["DBInstanceClass"] == "db.r6g.large"
    assert replica["DBInstanceStatus"] == "available"


def test_ecs_service_runs_revision_2_of_the_app_family(ctx, res):
    ecs = aws.client(ctx, "ecs")
    service = ecs.describe_services(cluster=N.ecs_cluster_name, services=[N.ecs_service_name])["services"][0]
    assert service["clusterArn"] == res.ecs_cluster_arn
    assert service["taskDefinition"].endswith(f"task-definition/{N.app_task_family}:2")
    assert service["desiredCount"] == service["runningCount"] == aws.APP_DESIRED_COUNT
    assert service["loadBalancers"][0]["targetGroupArn"] == res.target_group_arn
    images = [
        ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"][0]["image"]
        for arn in res.task_definition_arns
    ]
    assert images == ["bisman-erp:sandbox-1", "bisman-erp:sandbox-2"]


def test_task_definition_takes_secrets_from_the_secret_and_plain_settings_from_env(ctx, res):
    container = aws.client(ctx, "ecs").describe_task_definition(taskDefinition=f"{N.app_task_family}:2")[
        "taskDefinition"
    ]["containerDefinitions"][0]
    secrets = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    assert set(secrets) == set(aws.APP_SECRET_KEYS)
    assert all(v == f"{res.app_secrets_arn}:{k}::" for k, v in secrets.items())
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["NODE_ENV"] == "production"
    assert env["APP_ENV"] == "staging"
    assert not set(env) & set(aws.APP_SECRET_KEYS)
    assert context.DB_PASSWORD not in json.dumps(container["environment"])
    assert container["logConfiguration"]["options"]["awslogs-group"] == N.app_log_group


def test_app_secret_holds_every_key_with_pgbouncer_urls(ctx, res):
    value = json.loads(
        aws.client(ctx, "secretsmanager").get_secret_value(SecretId=res.app_secrets_arn)["SecretString"]
    )
    assert set(value) == set(aws.APP_SECRET_KEYS)
    assert all(value.values())
    pgbouncer = f"127.0.0.1:{ctx.port('pgbouncer')}"
    assert value["DATABASE_URL"].endswith(f"@{pgbouncer}/bisman_staging")
    assert value["DATABASE_URL_REPLICA"].endswith(f"@{pgbouncer}/bisman_staging_ro")
    assert value["STRIPE_WEBHOOK_SECRET"] == context.STRIPE_WEBHOOK_SECRET


def test_state_bucket_is_versioned_encrypted_and_private(ctx, res):
    s3 = aws.client(ctx, "s3")
    assert s3.get_bucket_versioning(Bucket=res.state_bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=res.state_bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    block = s3.get_public_access_block(Bucket=res.state_bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_lock_table_conditional_put_admits_only_the_first_holder(ctx, res):
    dynamodb = aws.client(ctx, "dynamodb")
    table = dynamodb.describe_table(TableName=res.lock_table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "LockID", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "LockID", "AttributeType": "S"}]
    lock_id = f"{res.state_bucket}/test-{uuid.uuid4()}"

    def acquire(who: str) -> None:
        dynamodb.put_item(
            TableName=res.lock_table,
            Item={"LockID": {"S": lock_id}, "Info": {"S": who}},
            ConditionExpression="attribute_not_exists(LockID)",
        )

    acquire("first")
    with pytest.raises(ClientError) as err:
        acquire("second")
    assert err.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    item = dynamodb.get_item(TableName=res.lock_table, Key={"LockID": {"S": lock_id}})["Item"]
    assert item["Info"]["S"] == "first"
    dynamodb.delete_item(TableName=res.lock_table, Key={"LockID": {"S": lock_id}})


def test_app_log_group_exists(ctx, res):
    groups = aws.client(ctx, "logs").describe_log_groups(logGroupNamePrefix=res.app_log_group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [N.app_log_group]


def test_certificate_for_the_sandbox_domain_is_issued(ctx, res):
    cert = aws.client(ctx, "acm").describe_certificate(CertificateArn=res.certificate_arn)["Certificate"]
    assert cert["DomainName"] == aws.SANDBOX_DOMAIN == "api.staging.bisman.test"
    assert cert["Status"] == "ISSUED"


def test_alb_serves_https_with_the_certificate_and_forwards_to_the_app(ctx, res):
    elbv2 = aws.client(ctx, "elbv2")
    alb = elbv2.describe_load_balancers(Names=[N.alb_name])["LoadBalancers"][0]
    assert alb["Scheme"] == "internet-facing"
    assert alb["SecurityGroups"] == [res.alb_security_group_id]
    https = elbv2.describe_listeners(ListenerArns=[res.https_listener_arn])["Listeners"][0]
    assert (https["Protocol"], https["Port"]) == ("HTTPS", 443)
    assert https["Certificates"] == [{"CertificateArn": res.certificate_arn}]
    assert https["DefaultActions"][0]["TargetGroupArn"] == res.target_group_arn
    tg = elbv2.describe_target_groups(TargetGroupArns=[res.target_group_arn])["TargetGroups"][0]
    assert (tg["Port"], tg["HealthCheckPath"]) == (aws.APP_CONTAINER_PORT, "/health")


def test_waf_web_acl_is_associated_with_the_alb(ctx, res):
    acl = aws.client(ctx, "wafv2").get_web_acl_for_resource(ResourceArn=res.alb_arn)["WebACL"]
    assert acl["ARN"] == res.waf_web_acl_arn
    assert acl["Name"] == N.waf_web_acl_name


def test_route53_zone_points_the_api_name_at_the_alb_and_holds_the_validation_cname(ctx, res):
    records = aws.client(ctx, "route53").list_resource_record_sets(HostedZoneId=res.hosted_zone_id)[
        "ResourceRecordSets"
    ]
    alias = [r for r in records if r["Name"] == "api.staging.bisman.test." and r["Type"] == "A"]
    assert len(alias) == 1
    assert alias[0]["AliasTarget"]["DNSName"] == res.alb_dns_name
    cert = aws.client(ctx, "acm").describe_certificate(CertificateArn=res.certificate_arn)["Certificate"]
    validation = cert["DomainValidationOptions"][0]["ResourceRecord"]
    cnames = [r for r in records if r["Type"] == "CNAME"]
    assert [(r["Name"], r["ResourceRecords"][0]["Value"]) for r in cnames] == [
        (validation["Name"], validation["Value"])
    ]


def inventory(ctx) -> dict[str, object]:
    """Counts of everything seeding creates, to compare before and after a second seed."""
    ec2 = aws.client(ctx, "ec2")
    res = aws.seeded(ctx)
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [res.vpc_id]}])
    return {
        "vpcs": len(ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [f"{N.prefix}-vpc"]}])["Vpcs"]),
        "subnets": len(ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [res.vpc_id]}])["Subnets"]),
        "security_group_rules": sorted(
            (g["GroupName"], len(p.get("UserIdGroupPairs", [])), len(p.get("IpRanges", [])))
            for g in groups["SecurityGroups"]
            for p in g["IpPermissions"]
        ),
        # Only the seeded ones: a database rollback rehearsed in this sandbox adds restored instances.
        "db_instances": len([
            i for i in aws.client(ctx, "rds").describe_db_instances()["DBInstances"]
            if i["DBInstanceIdentifier"] in (N.db_instance_identifier, N.db_replica_identifier)
        ]),
        "task_definitions": len(res.task_definition_arns),
        "services": len(aws.client(ctx, "ecs").list_services(cluster=N.ecs_cluster_name)["serviceArns"]),
        "secrets": len(aws.client(ctx, "secretsmanager").list_secrets()["SecretList"]),
        "certificates": len(aws.client(ctx, "acm").list_certificates()["CertificateSummaryList"]),
        "listeners": len(
            aws.client(ctx, "elbv2").describe_listeners(LoadBalancerArn=res.alb_arn)["Listeners"]
        ),
        "web_acls": len(aws.client(ctx, "wafv2").list_web_acls(Scope="REGIONAL")["WebACLs"]),
        "hosted_zones": len(aws.client(ctx, "route53").list_hosted_zones()["HostedZones"]),
        "records": len(
            aws.client(ctx, "route53").list_resource_record_sets(HostedZoneId=res.hosted_zone_id)[
                "ResourceRecordSets"
            ]
        ),
        "log_groups": len(aws.client(ctx, "logs").describe_log_groups()["logGroups"]),
    }


def test_both_environments_are_seeded_each_with_its_own_backend_and_resources(ctx):
    seen = {env: aws.seeded(ctx, env) for env in aws.SEEDED_ENVIRONMENTS}
    assert set(seen) == {"staging", "prod"}
    for env, res in seen.items():
        n = aws.names(env)
        assert (res.state_bucket, res.lock_table) == (n.state_bucket, n.lock_table)
        assert res.db_instance_identifier == n.db_instance_identifier
        assert res.domain_name == f"api.{env}.bisman.test"
        aws.client(ctx, "dynamodb").describe_table(TableName=res.lock_table)
        aws.client(ctx, "s3").head_bucket(Bucket=res.state_bucket)
    assert seen["staging"].vpc_id != seen["prod"].vpc_id
    assert seen["staging"].ecs_service_arn != seen["prod"].ecs_service_arn


def test_seeding_again_creates_no_duplicates(ctx):
    before = inventory(ctx)
    assert before["task_definitions"] == 2
    assert before["db_instances"] == 2
    aws.seed(ctx)
    aws.up(ctx)
    assert inventory(ctx) == before


def test_seeding_recreates_only_what_was_deleted(ctx):
    before = aws.seeded(ctx)
    aws.client(ctx, "logs").delete_log_group(logGroupName=N.app_log_group)
    aws.client(ctx, "wafv2").disassociate_web_acl(ResourceArn=before.alb_arn)
    after = aws.seed(ctx)
    assert after == before
    groups = aws.client(ctx, "logs").describe_log_groups(logGroupNamePrefix=N.app_log_group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [N.app_log_group]
    acl = aws.client(ctx, "wafv2").get_web_acl_for_resource(ResourceArn=before.alb_arn)["WebACL"]
    assert acl["ARN"] == before.waf_web_acl_arn


def test_replica_lag_datapoint_round_trips_through_cloudwatch(ctx):
    cloudwatch = aws.client(ctx, "cloudwatch")
    replica_id = f"test-replica-{uuid.uuid4().hex[:8]}"
    replica_lag_publisher.put_replica_lag(cloudwatch, replica_id, 4.25)
    assert max_replica_lag(ctx, replica_id) == 4.25


def max_replica_lag(ctx, replica_id: str) -> float | None:
    now = datetime.now(UTC)
    points = aws.client(ctx, "cloudwatch").get_metric_statistics(
        Namespace="AWS/RDS",
        MetricName="ReplicaLag",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": replica_id}],
        StartTime=now - timedelta(minutes=5),
        EndTime=now + timedelta(minutes=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    return max((p["Maximum"] for p in points), default=None)


def test_publisher_process_publishes_the_override_for_the_replica(ctx, res, monkeypatch):
    replica_lag_publisher.stop(ctx)
    monkeypatch.setenv(replica_lag_publisher.OVERRIDE_ENV, "123.5")
    try:
        replica_lag_publisher.start(ctx, replica_id=res.db_replica_identifier)
        wait_until(
            lambda: max_replica_lag(ctx, res.db_replica_identifier) == 123.5,
            timeout=20,
            what="override ReplicaLag datapoint",
        )
    finally:
        replica_lag_publisher.stop(ctx)
        monkeypatch.delenv(replica_lag_publisher.OVERRIDE_ENV)
        replica_lag_publisher.start(ctx, replica_id=res.db_replica_identifier)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nothing_is_published_when_the_replica_is_unreachable(ctx):
    replica_id = f"test-replica-{uuid.uuid4().hex[:8]}"
    published = replica_lag_publisher.publish_once(
        aws.client(ctx, "cloudwatch"), replica_id, free_port(), free_port()
    )
    assert published is None
    assert max_replica_lag(ctx, replica_id) is None


def test_client_from_airflow_env_connection_reaches_moto_with_one_attempt(ctx, res, monkeypatch):
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}", json.dumps(aws.connections(ctx)[config.AWS_CONN_ID])
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    sm = aws_client.client("secretsmanager")
    assert sm.meta.endpoint_url == ctx.url("moto")
    assert sm.meta.region_name == "us-east-1"
    assert sm.meta.config.retries["total_max_attempts"] == 1
    assert sm.meta.config.connect_timeout == aws_client.CONNECT_TIMEOUT_S
    assert sm.describe_secret(SecretId=N.app_secret_name)["ARN"] == res.app_secrets_arn


def test_connection_config_kwargs_override_the_default_timeouts(ctx, monkeypatch):
    conn = aws.connections(ctx)[config.AWS_CONN_ID]
    conn["extra"]["config_kwargs"] = {"read_timeout": 7}
    monkeypatch.setenv(f"AIRFLOW_CONN_{config.AWS_CONN_ID.upper()}", json.dumps(conn))
    cfg = aws_client.client("sts").meta.config
    assert cfg.read_timeout == 7
    assert cfg.connect_timeout == aws_client.CONNECT_TIMEOUT_S


class AlwaysFails(BaseHTTPRequestHandler):
    requests = 0

    def do_POST(self):
        type(self).requests += 1
        self.rfile.read(int(self.headers["Content-Length"] or 0))
        self.send_response(500)
        self.send_header("Content-Type", "text/xml")
        self.end_headers()
        self.wfile.write(b"<ErrorResponse><Error><Code>InternalFailure</Code></Error></ErrorResponse>")

    def log_message(self, *args):
        pass


def test_client_against_a_custom_endpoint_sends_a_failing_request_only_once(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws.FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws.FAKE_SECRET_ACCESS_KEY)
    server = ThreadingHTTPServer(("127.0.0.1", 0), AlwaysFails)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_FAILING_AWS", json.dumps({
            "conn_type": "aws",
            "extra": {"endpoint_url": f"http://127.0.0.1:{server.server_port}", "region_name": "us-east-1"},
        }))
        sts = aws_client.client("sts", "failing_aws")
        with pytest.raises(ClientError, match="InternalFailure"):
            sts.get_caller_identity()
    finally:
        server.shutdown()
    assert AlwaysFails.requests == 1
    assert aws_client.botocore_config(endpoint_url=None).retries["total_max_attempts"] > 1


@pytest.fixture
def own_moto(ctx, tmp_path):
    """A moto server of its own (the rest of the sandbox shared): restarting it loses what it held,
    which the sandbox's moto keeps for every other test (the seeded ids, the Terraform state)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    own = SandboxContext(state_dir=tmp_path, ports={**ctx.ports, "moto": port})
    aws.up(own)
    yield own
    aws.down(own)


def test_up_reseeds_a_restarted_moto(own_moto):
    ctx = own_moto
    before = aws.seeded(ctx)
    stop_process(ctx, aws.PROCESS_NAME)
    assert not aws.healthy(ctx)
    aws.up(ctx)
    after = aws.seeded(ctx)
    # Fresh resources, same names: moto lost everything and seeding recreated it.
    assert after.alb_arn != before.alb_arn
    assert after.db_replica_identifier == before.db_replica_identifier
    assert len(after.task_definition_arns) == 2
    cert = aws.client(ctx, "acm").describe_certificate(CertificateArn=after.certificate_arn)["Certificate"]
    assert cert["Status"] == "ISSUED"


# --- measuring real replication lag on a throw-away primary and streaming replica --------------


def as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def streaming_pair(ctx):
    """A primary and a streaming replica of our own, on free ports, torn down afterwards."""
    root = ctx.state_dir / f"test-lag-pg-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    shutil.chown(root, "postgres", "postgres")
    primary_port, replica_port = free_port(), free_port()
    primary, replica = root / "primary", root / "replica"
    started: list[Path] = []

    def start(data: Path, port: int) -> None:
        as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(root / f"{data.name}.log"),
            "-w",
            "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
            "start",
        )
        started.append(data)

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(primary), "-U", "postgres", "--auth=trust")
        start(primary, primary_port)
        with psycopg.connect(superuser(primary_port), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {context.DB_USER} LOGIN")
            conn.execute(f"CREATE DATABASE {context.DB_NAME} OWNER {context.DB_USER}")
        as_postgres(
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary_port),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
        )
        start(replica, replica_port)
        yield primary_port, replica_port
    finally:
        for data in reversed(started):
            as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def superuser(port: int) -> str:
    return f"host=127.0.0.1 port={port} dbname=postgres user=postgres connect_timeout=2"


def test_lag_of_a_streaming_replica_is_measured_below_a_second(streaming_pair):
    primary_port, replica_port = streaming_pair
    lag = replica_lag_publisher.measure_replica_lag(
        replica_lag_publisher.conninfo(primary_port), replica_lag_publisher.conninfo(replica_port)
    )
    assert lag is not None
    assert 0 <= lag < 1.0


def test_lag_grows_while_the_replica_does_not_replay(streaming_pair):
    primary_port, replica_port = streaming_pair
    primary, standby = (
        replica_lag_publisher.conninfo(primary_port),
        replica_lag_publisher.conninfo(replica_port),
    )
    before = replica_lag_publisher.measure_replica_lag(primary, standby)  # one commit replayed
    with psycopg.connect(superuser(replica_port), autocommit=True) as replica:
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            time.sleep(1.5)
            lag = replica_lag_publisher.measure_replica_lag(primary, standby, settle_s=0.5)
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
    assert lag is not None
    assert lag > before  # grows while nothing is replayed (how much: bench/sandbox.py)


def test_lag_is_not_measured_when_the_replica_is_down(streaming_pair):
    primary_port, _ = streaming_pair
    assert (
        replica_lag_publisher.measure_replica_lag(
            replica_lag_publisher.conninfo(primary_port), replica_lag_publisher.conninfo(free_port())
        )
        is None
    )
