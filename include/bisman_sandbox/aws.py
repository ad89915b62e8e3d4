"""The AWS control plane of the sandbox: a moto server seeded as Terraform would have left it.

``up`` starts moto's server on 127.0.0.1, extended with the effects of AWS calls on the local
services (``bisman_sandbox.aws_endpoint``), and creates whatever is missing of the staging
environment (VPC, security groups, RDS primary and read replica, ECS cluster/service/task
definitions, the application's secret, the Terraform state bucket and lock table, the log group,
the ALB with its HTTPS listener, ACM certificate, WAF web ACL and Route 53 records). moto keeps
everything in memory, so a restarted server is simply seeded again. ``seeded`` reads back the ids
and ARNs the sandbox's Terraform configuration publishes as outputs. ``up`` also starts the
replica-lag publisher, because moto has no RDS metrics of its own.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bisman_ops import config, naming
from bisman_ops.clients import aws as aws_client
from bisman_sandbox import context, replica_lag_publisher
from bisman_sandbox.context import HOST, SandboxContext
from bisman_sandbox.process import (
    SandboxError,
    is_running,
    port_open,
    start_process,
    stop_process,
    wait_until,
)

PROCESS_NAME = "moto"
# Both environments are seeded, so either can be rehearsed (the rollout's form, the rollbacks).
SEEDED_ENVIRONMENTS = ("staging", "prod")


def zone(environment: str) -> str:
    return f"{environment}.bisman.test"


def domain(environment: str) -> str:
    return f"api.{zone(environment)}"


SANDBOX_ZONE = zone(context.ENVIRONMENT)
SANDBOX_DOMAIN = domain(context.ENVIRONMENT)
APP_IMAGES = ("bisman-erp:sandbox-1", "bisman-erp:sandbox-2")  # task definition revisions 1 and 2
APP_CONTAINER_NAME = "app"
APP_CONTAINER_PORT = 3000
APP_DESIRED_COUNT = 2
DB_INSTANCE_CLASS = "db.r6g.large"
DB_ENGINE_VERSION = "15.7"
DB_PARAMETER_GROUP_FAMILY = "postgres15"
# moto accepts any key pair; these only have to look like credentials.
FAKE_ACCESS_KEY_ID = "AKIASANDBOXNOTSECRET"
FAKE_SECRET_ACCESS_KEY = "sandbox-secret-access-key-not-secret"
# ACM certificates stay PENDING_VALIDATION for this many seconds in moto (default 60).
ACM_VALIDATION_WAIT_S = 1
STARTUP_TIMEOUT_S = 30
HTTP_TIMEOUT_S = 2

# The keys of the application's secret; the task definitions reference each one.
APP_SECRET_KEYS = (
    "JWT_SECRET",
    "DATABASE_URL",
    "DATABASE_URL_REPLICA",
    "DB_PASSWORD",
    "REDIS_PASSWORD",
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_PRICE_ID_FREE",
    "STRIPE_PRICE_ID_PRO",
    "STRIPE_PRICE_ID_ENTERPRISE",
    "SMTP_USER",
    "SMTP_PASSWORD",
)

_VPC_CIDR = "10.40.0.0/16"
_SUBNETS = {  # name suffix -> (cidr, availability zone suffix)
    "private-a": ("10.40.1.0/24", "a"),
    "private-b": ("10.40.2.0/24", "b"),
    "public-a": ("10.40.101.0/24", "a"),
    "public-b": ("10.40.102.0/24", "b"),
}


def names(environment: str = context.ENVIRONMENT) -> naming.ResourceNames:
    return naming.ResourceNames(context.PROJECT_NAME, environment)


def _extra_names(n: naming.ResourceNames) -> dict[str, str]:
    """Names the Terraform configuration uses that naming.py has no property for (yet)."""
    return {
        "vpc": f"{n.prefix}-vpc",
        "alb_sg": f"{n.prefix}-alb-sg",
        "pgbouncer_sg": f"{n.prefix}-pgbouncer-sg",
        "db_subnet_group": f"{n.prefix}-db-subnets",
        "db_parameter_group": f"{n.prefix}-postgres15",
        "target_group": f"{n.prefix}-app-tg",
    }


def sandbox_app_secret(ctx: SandboxContext) -> dict[str, str]:
    """The application's Secrets Manager secret as the sandbox fills it.

    The passwords are the sandbox services' own, so the secret's values really log in.
    """
    from bisman_sandbox.redis import REDIS_PASSWORD
    from bisman_sandbox.sinks import SMTP_PASSWORD, SMTP_USER

    db_auth = f"{context.DB_USER}:{context.DB_PASSWORD}"
    pgbouncer = f"{HOST}:{ctx.port('pgbouncer')}"
    return {
        "JWT_SECRET": context.JWT_SECRET,
        "DATABASE_URL": f"postgresql://{db_auth}@{pgbouncer}/{context.DB_NAME}",
        "DATABASE_URL_REPLICA": f"postgresql://{db_auth}@{pgbouncer}/{context.DB_NAME}_ro",
        "DB_PASSWORD": context.DB_PASSWORD,
        "REDIS_PASSWORD": REDIS_PASSWORD,
        "STRIPE_SECRET_KEY": context.STRIPE_SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": context.STRIPE_WEBHOOK_SECRET,
        # localstripe has no Price objects; these ids only have to be stable.
        "STRIPE_PRICE_ID_FREE": "price_sandbox_free",
        "STRIPE_PRICE_ID_PRO": "price_sandbox_pro",
        "STRIPE_PRICE_ID_ENTERPRISE": "price_sandbox_enterprise",
        "SMTP_USER": SMTP_USER,
        "SMTP_PASSWORD": SMTP_PASSWORD,
    }


@dataclass(frozen=True)
class SeededResources:
    """Ids and ARNs of the seeded environment, what the sandbox's Terraform outputs point at."""

    account_id: str
    region: str
    vpc_id: str
    private_subnet_ids: tuple[str, ...]
    public_subnet_ids: tuple[str, ...]
    app_security_group_id: str
    db_security_group_id: str
    redis_security_group_id: str
    pgbouncer_security_group_id: str
    alb_security_group_id: str
    db_subnet_group_name: str
    db_parameter_group_name: str
    db_instance_identifier: str
    db_instance_arn: str
    db_replica_identifier: str
    db_replica_arn: str
    ecs_cluster_arn: str
    ecs_service_arn: str
    task_definition_arns: tuple[str, ...]
    app_secrets_arn: str
    state_bucket: str
    lock_table: str
    app_log_group: str
    alb_arn: str
    alb_dns_name: str
    target_group_arn: str
    https_listener_arn: str
    certificate_arn: str
    waf_web_acl_arn: str
    hosted_zone_id: str
    domain_name: str


# --- service module interface ---------------------------------------------------------------


def endpoint_url(ctx: SandboxContext) -> str:
    return ctx.url("moto")


def up(ctx: SandboxContext) -> dict[str, str]:
    if not _moto_answers(ctx):
        if port_open(ctx.port("moto")) and not is_running(ctx, PROCESS_NAME):
            raise SandboxError(
                f"port {ctx.port('moto')} is taken by another process; stop it or set "
                "BISMAN_SANDBOX_PORT_MOTO"
            )
        start_process(ctx, PROCESS_NAME, _moto_argv(ctx), env=_moto_env(ctx))
        wait_until(
            lambda: _moto_answers(ctx),
            timeout=STARTUP_TIMEOUT_S,
            what=f"moto server on {endpoint_url(ctx)} (log: {ctx.log_dir / 'moto.log'})",
        )
    resources = seed(ctx)
    for environment in SEEDED_ENVIRONMENTS:
        if environment != context.ENVIRONMENT:
            seed(ctx, environment)
    replica_lag_publisher.start(ctx, replica_id=resources.db_replica_identifier)
    return {
        "AWS (moto)": endpoint_url(ctx),
        "API domain": f"{SANDBOX_DOMAIN} -> {resources.alb_dns_name}",
    }


def down(ctx: SandboxContext) -> None:
    replica_lag_publisher.stop(ctx)
    stop_process(ctx, PROCESS_NAME)


def healthy(ctx: SandboxContext) -> bool:
    return is_running(ctx, PROCESS_NAME) and _moto_answers(ctx) and replica_lag_publisher.running(ctx)


def settings(ctx: SandboxContext) -> dict[str, str]:
    """moto's ECS never lists tasks of a service: the application rollback reads the service's own
    counts instead (bisman_sandbox.rollback_impl)."""
    from bisman_ops.extension import env_var

    return {env_var("service_tasks"): "bisman_sandbox.rollback_impl:SandboxServiceTasks",
            # moto runs no ECS task: the migrations' one-off task runs for real (one_off_tasks.py).
            env_var("one_off_task_runner"): "bisman_sandbox.one_off_tasks:SandboxOneOffTaskRunner",
            # The deployment the sandbox's Airflow operates (bisman_ops.config.deployment).
            "BISMAN_PROJECT_NAME": context.PROJECT_NAME, "BISMAN_ENVIRONMENT": context.ENVIRONMENT}


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {
        config.AWS_CONN_ID: {
            "conn_type": "aws",
            "login": FAKE_ACCESS_KEY_ID,
            "password": FAKE_SECRET_ACCESS_KEY,
            "extra": {"endpoint_url": endpoint_url(ctx), "region_name": context.AWS_REGION},
        }
    }


def client(ctx: SandboxContext, service: str) -> Any:
    """A boto3 client on the sandbox's moto, with the fake credentials."""
    return _client(endpoint_url(ctx), service)


@functools.cache
def _client(url: str, service: str) -> Any:
    # Cached: building a boto3 session and client costs ~0.1 s, and seeding uses a dozen.
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=FAKE_SECRET_ACCESS_KEY,
        region_name=context.AWS_REGION,
    )
    return session.client(service, endpoint_url=url, config=aws_client.botocore_config(endpoint_url=url))


def _moto_argv(ctx: SandboxContext) -> list[str]:
    """moto's server with the effects of bisman_sandbox.aws_endpoint."""
    return [sys.executable, "-m", "bisman_sandbox.aws_endpoint", "-H", HOST, "-p", str(ctx.port("moto"))]


def _moto_env(ctx: SandboxContext) -> dict[str, str]:
    include = str(Path(__file__).resolve().parents[1])
    return {
        # The effects reach the local services from the sandbox's location.
        "PYTHONPATH": os.pathsep.join(p for p in (include, os.environ.get("PYTHONPATH", "")) if p),
        "BISMAN_SANDBOX_DIR": str(ctx.state_dir),
        **{f"BISMAN_SANDBOX_PORT_{name.upper()}": str(port) for name, port in ctx.ports.items()},
        "MOTO_ACM_VALIDATION_WAIT": str(ACM_VALIDATION_WAIT_S),
        # moto's ECS services never start tasks; this makes describe_services report them running.
        "MOTO_ECS_SERVICE_RUNNING": str(APP_DESIRED_COUNT),
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": context.AWS_REGION,
    }


def _moto_answers(ctx: SandboxContext) -> bool:
    try:
        return requests.get(f"{endpoint_url(ctx)}/moto-api/", timeout=HTTP_TIMEOUT_S).ok
    except requests.RequestException:
        return False


# --- seeding: each step finds the resource by name and creates it only when missing ---------


def seed(ctx: SandboxContext, environment: str = context.ENVIRONMENT) -> SeededResources:
    """Create whatever is missing of ``environment``; return what is there."""
    n = names(environment)
    site = domain(environment)
    x = _extra_names(n)
    tags = _tags(n)
    ec2 = client(ctx, "ec2")

    vpc_id = _ensure_vpc(ec2, x["vpc"], tags)
    subnets = {
        suffix: _ensure_subnet(ec2, vpc_id, f"{n.prefix}-{suffix}", *spec, tags)
        for suffix, spec in _SUBNETS.items()
    }
    sg = {
        key: _ensure_security_group(ec2, vpc_id, name, tags)
        for key, name in (
            ("alb", x["alb_sg"]),
            ("app", n.app_security_group_name),
            ("db", n.db_security_group_name),
            ("redis", n.redis_security_group_name),
            ("pgbouncer", x["pgbouncer_sg"]),
        )
    }
    # The load balancer is the only thing open to the internet; the data tier only to the app, and
    # the database also to PgBouncer, which pools the app's connections (the usual layout).
    for port in (80, 443):
        _ensure_ingress(ec2, sg["alb"], port, cidr="0.0.0.0/0")
    _ensure_ingress(ec2, sg["app"], APP_CONTAINER_PORT, source_group=sg["alb"])
    _ensure_ingress(ec2, sg["db"], 5432, source_group=sg["app"])
    _ensure_ingress(ec2, sg["db"], 5432, source_group=sg["pgbouncer"])
    _ensure_ingress(ec2, sg["redis"], 6379, source_group=sg["app"])
    _ensure_ingress(ec2, sg["pgbouncer"], 6432, source_group=sg["app"])

    private = [subnets["private-a"], subnets["private-b"]]
    public = [subnets["public-a"], subnets["public-b"]]
    _ensure_log_group(client(ctx, "logs"), n.app_log_group, tags)
    secret_arn = _ensure_secret(
        client(ctx, "secretsmanager"), n.app_secret_name, sandbox_app_secret(ctx), tags
    )
    _ensure_state_bucket(client(ctx, "s3"), n.state_bucket, tags)
    _ensure_lock_table(client(ctx, "dynamodb"), n.lock_table, tags)

    rds = client(ctx, "rds")
    _ensure_db_subnet_group(rds, x["db_subnet_group"], private, tags)
    _ensure_db_parameter_group(rds, x["db_parameter_group"], tags)
    _ensure_db_primary(rds, n, x, sg["db"], tags)
    _ensure_db_replica(rds, n, sg["db"], tags)

    acm = client(ctx, "acm")
    cert_arn = _ensure_certificate(acm, site, tags)
    elbv2 = client(ctx, "elbv2")
    alb = _ensure_alb(elbv2, n.alb_name, public, sg["alb"], tags)
    tg_arn = _ensure_target_group(elbv2, x["target_group"], vpc_id, tags)
    wait_until(
        lambda: _certificate(acm, cert_arn)["Status"] == "ISSUED",
        timeout=STARTUP_TIMEOUT_S,
        what=f"ACM certificate for {site} to become ISSUED",
    )
    _ensure_listeners(elbv2, alb["LoadBalancerArn"], tg_arn, cert_arn)
    _ensure_web_acl(client(ctx, "wafv2"), n.waf_web_acl_name, alb["LoadBalancerArn"], tags)
    _ensure_dns(client(ctx, "route53"), n, alb, _certificate(acm, cert_arn))

    ecs = client(ctx, "ecs")
    _ensure_cluster(ecs, n.ecs_cluster_name, tags)
    account_id = _account_id(ctx)
    _ensure_task_definitions(ecs, n, secret_arn, account_id, tags)
    _ensure_service(ecs, n, private, sg["app"], tg_arn, tags)
    return seeded(ctx, environment)


def seeded(ctx: SandboxContext, environment: str = context.ENVIRONMENT) -> SeededResources:
    """Read back the seeded environment; raise SandboxError if any part is missing."""
    if not _moto_answers(ctx):
        raise SandboxError(f"moto is not answering on {endpoint_url(ctx)}; start the sandbox (`up`)")
    n = names(environment)
    site = domain(environment)
    x = _extra_names(n)
    ec2, rds, ecs, elbv2 = (client(ctx, s) for s in ("ec2", "rds", "ecs", "elbv2"))
    vpc_id = _require(_find_vpc(ec2, x["vpc"]), "VPC", x["vpc"])

    def subnet(suffix: str) -> str:
        name = f"{n.prefix}-{suffix}"
        return _require(_find_subnet(ec2, vpc_id, name), "subnet", name)

    def sg(name: str) -> str:
        return _require(_find_security_group(ec2, vpc_id, name), "security group", name)

    primary = _require(_find_db(rds, n.db_instance_identifier), "RDS instance", n.db_instance_identifier)
    replica = _require(_find_db(rds, n.db_replica_identifier), "RDS instance", n.db_replica_identifier)
    cluster = _require(_find_cluster(ecs, n.ecs_cluster_name), "ECS cluster", n.ecs_cluster_name)
    service = _require(
        _find_service(ecs, n.ecs_cluster_name, n.ecs_service_name), "ECS service", n.ecs_service_name
    )
    task_defs = ecs.list_task_definitions(familyPrefix=n.app_task_family, sort="ASC")["taskDefinitionArns"]
    secret = _require(
        _find_secret(client(ctx, "secretsmanager"), n.app_secret_name), "secret", n.app_secret_name
    )
    alb = _require(_find_alb(elbv2, n.alb_name), "load balancer", n.alb_name)
    tg_arn = _require(_find_target_group(elbv2, x["target_group"]), "target group", x["target_group"])
    listeners = {
        li["Port"]: li["ListenerArn"]
        for li in elbv2.describe_listeners(LoadBalancerArn=alb["LoadBalancerArn"])["Listeners"]
    }
    cert_arn = _require(_find_certificate(client(ctx, "acm"), site), "certificate", site)
    waf = _require(_find_web_acl(client(ctx, "wafv2"), n.waf_web_acl_name), "WAF web ACL", n.waf_web_acl_name)
    zone_id = _require(_find_hosted_zone(client(ctx, "route53"), zone(environment)), "hosted zone",
                       zone(environment))
    return SeededResources(
        account_id=_account_id(ctx),
        region=context.AWS_REGION,
        vpc_id=vpc_id,
        private_subnet_ids=(subnet("private-a"), subnet("private-b")),
        public_subnet_ids=(subnet("public-a"), subnet("public-b")),
        app_security_group_id=sg(n.app_security_group_name),
        db_security_group_id=sg(n.db_security_group_name),
        redis_security_group_id=sg(n.redis_security_group_name),
        pgbouncer_security_group_id=sg(x["pgbouncer_sg"]),
        alb_security_group_id=sg(x["alb_sg"]),
        db_subnet_group_name=x["db_subnet_group"],
        db_parameter_group_name=x["db_parameter_group"],
        db_instance_identifier=n.db_instance_identifier,
        db_instance_arn=primary["DBInstanceArn"],
        db_replica_identifier=n.db_replica_identifier,
        db_replica_arn=replica["DBInstanceArn"],
        ecs_cluster_arn=cluster["clusterArn"],
        ecs_service_arn=service["serviceArn"],
        task_definition_arns=tuple(task_defs),
        app_secrets_arn=secret["ARN"],
        state_bucket=n.state_bucket,
        lock_table=n.lock_table,
        app_log_group=n.app_log_group,
        alb_arn=alb["LoadBalancerArn"],
        alb_dns_name=alb["DNSName"],
        target_group_arn=tg_arn,
        https_listener_arn=_require(listeners.get(443), "HTTPS listener on", n.alb_name),
        certificate_arn=cert_arn,
        waf_web_acl_arn=waf["ARN"],
        hosted_zone_id=zone_id,
        domain_name=site,
    )


def _require(value: Any, kind: str, name: str) -> Any:
    if not value:
        raise SandboxError(f"{kind} {name} missing in moto; run the sandbox's `up` to seed it")
    return value


def _tags(n: naming.ResourceNames) -> dict[str, str]:
    return {"Project": n.project_name, "Environment": n.environment, "ManagedBy": "terraform"}


def _tag_list(tags: dict[str, str], **extra: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in {**tags, **extra}.items()]


def _account_id(ctx: SandboxContext) -> str:
    return client(ctx, "sts").get_caller_identity()["Account"]


# EC2 --------------------------------------------------------------------------------------------


def _find_vpc(ec2: Any, name: str) -> str | None:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "tag:Name", "Values": [name]}])["Vpcs"]
    return vpcs[0]["VpcId"] if vpcs else None


def _ensure_vpc(ec2: Any, name: str, tags: dict[str, str]) -> str:
    if vpc_id := _find_vpc(ec2, name):
        return vpc_id
    return ec2.create_vpc(
        CidrBlock=_VPC_CIDR,
        TagSpecifications=[{"ResourceType": "vpc", "Tags": _tag_list(tags, Name=name)}],
    )["Vpc"]["VpcId"]


def _find_subnet(ec2: Any, vpc_id: str, name: str) -> str | None:
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "tag:Name", "Values": [name]}]
    )["Subnets"]
    return subnets[0]["SubnetId"] if subnets else None


def _ensure_subnet(ec2: Any, vpc_id: str, name: str, cidr: str, az: str, tags: dict[str, str]) -> str:
    if subnet_id := _find_subnet(ec2, vpc_id, name):
        return subnet_id
    return ec2.create_subnet(
        VpcId=vpc_id,
        CidrBlock=cidr,
        AvailabilityZone=f"{context.AWS_REGION}{az}",
        TagSpecifications=[{"ResourceType": "subnet", "Tags": _tag_list(tags, Name=name)}],
    )["Subnet"]["SubnetId"]


def _find_security_group(ec2: Any, vpc_id: str, name: str) -> str | None:
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    return groups[0]["GroupId"] if groups else None


def _ensure_security_group(ec2: Any, vpc_id: str, name: str, tags: dict[str, str]) -> str:
    if group_id := _find_security_group(ec2, vpc_id, name):
        return group_id
    return ec2.create_security_group(
        GroupName=name,
        Description=f"{name} (managed by Terraform)",
        VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": _tag_list(tags, Name=name)}],
    )["GroupId"]


def _ensure_ingress(
    ec2: Any, group_id: str, port: int, *, source_group: str | None = None, cidr: str | None = None
) -> None:
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    for perm in group["IpPermissions"]:
        if perm.get("FromPort") != port or perm.get("ToPort") != port:
            continue
        if source_group and any(p["GroupId"] == source_group for p in perm.get("UserIdGroupPairs", [])):
            return
        if cidr and any(r["CidrIp"] == cidr for r in perm.get("IpRanges", [])):
            return
    permission: dict[str, Any] = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
    if source_group:
        permission["UserIdGroupPairs"] = [{"GroupId": source_group}]
    if cidr:
        permission["IpRanges"] = [{"CidrIp": cidr}]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission])


# Logs, Secrets Manager, S3, DynamoDB -----------------------------------------------------------


def _ensure_log_group(logs: Any, name: str, tags: dict[str, str]) -> None:
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    if any(g["logGroupName"] == name for g in groups):
        return
    logs.create_log_group(logGroupName=name, tags=tags)
    logs.put_retention_policy(logGroupName=name, retentionInDays=30)


def _find_secret(sm: Any, name: str) -> dict | None:
    try:
        return sm.describe_secret(SecretId=name)
    except sm.exceptions.ResourceNotFoundException:
        return None


def _ensure_secret(sm: Any, name: str, value: dict[str, str], tags: dict[str, str]) -> str:
    # An existing secret is left alone: a rotation in a rehearsal must survive a re-seed.
    if secret := _find_secret(sm, name):
        return secret["ARN"]
    return sm.create_secret(
        Name=name,
        Description="BISMAN ERP application secrets",
        SecretString=json.dumps(value),
        Tags=_tag_list(tags),
    )["ARN"]


def _ensure_state_bucket(s3: Any, bucket: str, tags: dict[str, str]) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] not in ("404", "NoSuchBucket"):
            raise
        s3.create_bucket(Bucket=bucket)  # us-east-1 takes no LocationConstraint
        s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": _tag_list(tags)})
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    if s3.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        s3.get_bucket_encryption(Bucket=bucket)
    except s3.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )


def _ensure_lock_table(dynamodb: Any, table: str, tags: dict[str, str]) -> None:
    try:
        dynamodb.describe_table(TableName=table)
        return
    except dynamodb.exceptions.ResourceNotFoundException:
        pass
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=_tag_list(tags),
    )


# RDS --------------------------------------------------------------------------------------------


def _ensure_db_subnet_group(rds: Any, name: str, subnet_ids: list[str], tags: dict[str, str]) -> None:
    try:
        rds.describe_db_subnet_groups(DBSubnetGroupName=name)
    except rds.exceptions.DBSubnetGroupNotFoundFault:
        rds.create_db_subnet_group(
            DBSubnetGroupName=name,
            DBSubnetGroupDescription="BISMAN ERP database subnets",
            SubnetIds=subnet_ids,
            Tags=_tag_list(tags),
        )


def _ensure_db_parameter_group(rds: Any, name: str, tags: dict[str, str]) -> None:
    # moto answers an empty list for a missing group where RDS raises DBParameterGroupNotFound.
    try:
        if rds.describe_db_parameter_groups(DBParameterGroupName=name)["DBParameterGroups"]:
            return
    except rds.exceptions.DBParameterGroupNotFoundFault:
        pass
    rds.create_db_parameter_group(
        DBParameterGroupName=name,
        DBParameterGroupFamily=DB_PARAMETER_GROUP_FAMILY,
        Description="BISMAN ERP PostgreSQL parameters",
        Tags=_tag_list(tags),
    )
    rds.modify_db_parameter_group(
        DBParameterGroupName=name,
        Parameters=[
            {"ParameterName": "rds.force_ssl", "ParameterValue": "1", "ApplyMethod": "pending-reboot"},
            {
                "ParameterName": "log_min_duration_statement",
                "ParameterValue": "500",
                "ApplyMethod": "immediate",
            },
        ],
    )


def _find_db(rds: Any, identifier: str) -> dict | None:
    try:
        return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault:
        return None


def _ensure_db_primary(
    rds: Any, n: naming.ResourceNames, x: dict[str, str], sg_id: str, tags: dict[str, str]
) -> None:
    if _find_db(rds, n.db_instance_identifier):
        return
    rds.create_db_instance(
        DBInstanceIdentifier=n.db_instance_identifier,
        Engine="postgres",
        EngineVersion=DB_ENGINE_VERSION,
        DBInstanceClass=DB_INSTANCE_CLASS,
        DBName=n.db_name,
        MasterUsername=context.DB_USER,
        MasterUserPassword=context.DB_PASSWORD,
        AllocatedStorage=100,
        StorageType="gp3",
        StorageEncrypted=True,
        MultiAZ=True,
        BackupRetentionPeriod=7,
        DBSubnetGroupName=x["db_subnet_group"],
        DBParameterGroupName=x["db_parameter_group"],
        VpcSecurityGroupIds=[sg_id],
        PubliclyAccessible=False,
        CopyTagsToSnapshot=True,
        Tags=_tag_list(tags),
    )


def _ensure_db_replica(rds: Any, n: naming.ResourceNames, sg_id: str, tags: dict[str, str]) -> None:
    if _find_db(rds, n.db_replica_identifier):
        return
    rds.create_db_instance_read_replica(
        DBInstanceIdentifier=n.db_replica_identifier,
        SourceDBInstanceIdentifier=n.db_instance_identifier,
        DBInstanceClass=DB_INSTANCE_CLASS,
        VpcSecurityGroupIds=[sg_id],
        PubliclyAccessible=False,
        Tags=_tag_list(tags),
    )


# ACM, ELBv2, WAFv2, Route 53 ----------------------------------------------------------------------


def _find_certificate(acm: Any, domain: str) -> str | None:
    certs = acm.list_certificates(CertificateStatuses=["PENDING_VALIDATION", "ISSUED"])
    matches = [c["CertificateArn"] for c in certs["CertificateSummaryList"] if c["DomainName"] == domain]
    return matches[0] if matches else None


def _certificate(acm: Any, arn: str) -> dict:
    return acm.describe_certificate(CertificateArn=arn)["Certificate"]


def _ensure_certificate(acm: Any, domain: str, tags: dict[str, str]) -> str:
    if arn := _find_certificate(acm, domain):
        return arn
    return acm.request_certificate(
        DomainName=domain,
        ValidationMethod="DNS",
        IdempotencyToken="bismansandbox",
        Tags=_tag_list(tags),
    )["CertificateArn"]


def _find_alb(elbv2: Any, name: str) -> dict | None:
    try:
        return elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]
    except elbv2.exceptions.LoadBalancerNotFoundException:
        return None


def _ensure_alb(elbv2: Any, name: str, subnet_ids: list[str], sg_id: str, tags: dict[str, str]) -> dict:
    if alb := _find_alb(elbv2, name):
        return alb
    return elbv2.create_load_balancer(
        Name=name,
        Subnets=subnet_ids,
        SecurityGroups=[sg_id],
        Scheme="internet-facing",
        Type="application",
        IpAddressType="ipv4",
        Tags=_tag_list(tags),
    )["LoadBalancers"][0]


def _find_target_group(elbv2: Any, name: str) -> str | None:
    try:
        return elbv2.describe_target_groups(Names=[name])["TargetGroups"][0]["TargetGroupArn"]
    except elbv2.exceptions.TargetGroupNotFoundException:
        return None


def _ensure_target_group(elbv2: Any, name: str, vpc_id: str, tags: dict[str, str]) -> str:
    if arn := _find_target_group(elbv2, name):
        return arn
    return elbv2.create_target_group(
        Name=name,
        Protocol="HTTP",
        Port=APP_CONTAINER_PORT,
        VpcId=vpc_id,
        TargetType="ip",
        HealthCheckPath="/health",
        HealthCheckIntervalSeconds=15,
        HealthyThresholdCount=2,
        UnhealthyThresholdCount=3,
        Matcher={"HttpCode": "200"},
        Tags=_tag_list(tags),
    )["TargetGroups"][0]["TargetGroupArn"]


def _ensure_listeners(elbv2: Any, alb_arn: str, tg_arn: str, cert_arn: str) -> None:
    ports = {li["Port"] for li in elbv2.describe_listeners(LoadBalancerArn=alb_arn)["Listeners"]}
    if 443 not in ports:
        elbv2.create_listener(
            LoadBalancerArn=alb_arn,
            Protocol="HTTPS",
            Port=443,
            SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06",
            Certificates=[{"CertificateArn": cert_arn}],
            DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
        )
    if 80 not in ports:
        elbv2.create_listener(
            LoadBalancerArn=alb_arn,
            Protocol="HTTP",
            Port=80,
            DefaultActions=[
                {
                    "Type": "redirect",
                    "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
                }
            ],
        )


def _find_web_acl(wafv2: Any, name: str) -> dict | None:
    acls = wafv2.list_web_acls(Scope="REGIONAL", Limit=100)["WebACLs"]
    return next((a for a in acls if a["Name"] == name), None)


def _ensure_web_acl(wafv2: Any, name: str, alb_arn: str, tags: dict[str, str]) -> None:
    acl = _find_web_acl(wafv2, name)
    if acl is None:
        acl = wafv2.create_web_acl(
            Name=name,
            Scope="REGIONAL",
            DefaultAction={"Allow": {}},
            Rules=[
                {
                    "Name": "aws-common-rules",
                    "Priority": 1,
                    "Statement": {
                        "ManagedRuleGroupStatement": {
                            "VendorName": "AWS",
                            "Name": "AWSManagedRulesCommonRuleSet",
                        }
                    },
                    "OverrideAction": {"None": {}},
                    "VisibilityConfig": _waf_visibility("aws-common-rules"),
                },
                {
                    "Name": "rate-limit-per-ip",
                    "Priority": 2,
                    "Statement": {"RateBasedStatement": {"Limit": 2000, "AggregateKeyType": "IP"}},
                    "Action": {"Block": {}},
                    "VisibilityConfig": _waf_visibility("rate-limit-per-ip"),
                },
            ],
            VisibilityConfig=_waf_visibility(name),
            Tags=_tag_list(tags),
        )["Summary"]
    associated = wafv2.get_web_acl_for_resource(ResourceArn=alb_arn).get("WebACL")
    if not associated:
        wafv2.associate_web_acl(WebACLArn=acl["ARN"], ResourceArn=alb_arn)


def _waf_visibility(metric: str) -> dict:
    return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": metric}


def _find_hosted_zone(route53: Any, zone: str) -> str | None:
    zones = route53.list_hosted_zones_by_name(DNSName=zone, MaxItems="1")["HostedZones"]
    if zones and zones[0]["Name"] == f"{zone}.":
        return zones[0]["Id"].split("/")[-1]
    return None


def _ensure_dns(route53: Any, n: naming.ResourceNames, alb: dict, certificate: dict) -> None:
    zone_name, site = zone(n.environment), domain(n.environment)
    zone_id = _find_hosted_zone(route53, zone_name)
    if zone_id is None:
        zone_id = route53.create_hosted_zone(
            Name=zone_name,
            CallerReference=f"{n.prefix}-{zone_name}",
            HostedZoneConfig={"Comment": f"{n.prefix} public zone", "PrivateZone": False},
        )["HostedZone"]["Id"].split("/")[-1]
    existing = {
        (r["Name"], r["Type"])
        for r in route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    }
    changes = []
    if (f"{site}.", "A") not in existing:
        changes.append(
            {
                "Action": "CREATE",
                "ResourceRecordSet": {
                    "Name": site,
                    "Type": "A",
                    "AliasTarget": {
                        "HostedZoneId": alb["CanonicalHostedZoneId"],
                        "DNSName": alb["DNSName"],
                        "EvaluateTargetHealth": True,
                    },
                },
            }
        )
    for option in certificate.get("DomainValidationOptions", []):
        record = option["ResourceRecord"]
        if (record["Name"], record["Type"]) not in existing:
            changes.append(
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": record["Name"],
                        "Type": record["Type"],
                        "TTL": 300,
                        "ResourceRecords": [{"Value": record["Value"]}],
                    },
                }
            )
    if changes:
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})


# ECS --------------------------------------------------------------------------------------------


def _find_cluster(ecs: Any, name: str) -> dict | None:
    clusters = ecs.describe_clusters(clusters=[name])["clusters"]
    return next((c for c in clusters if c["status"] == "ACTIVE"), None)


def _ensure_cluster(ecs: Any, name: str, tags: dict[str, str]) -> None:
    if _find_cluster(ecs, name):
        return
    ecs.create_cluster(
        clusterName=name,
        settings=[{"name": "containerInsights", "value": "enabled"}],
        tags=[{"key": k, "value": v} for k, v in tags.items()],
    )


def _ensure_task_definitions(
    ecs: Any, n: naming.ResourceNames, secret_arn: str, account_id: str, tags: dict[str, str]
) -> None:
    """Revisions 1 and 2 of the app's family; later revisions (from rollouts) are left alone."""
    existing = ecs.list_task_definitions(familyPrefix=n.app_task_family)["taskDefinitionArns"]
    for image in APP_IMAGES[len(existing) :]:
        ecs.register_task_definition(**_task_definition(n, image, secret_arn, account_id, tags))


def _task_definition(
    n: naming.ResourceNames, image: str, secret_arn: str, account_id: str, tags: dict[str, str]
) -> dict:
    environment = {
        "NODE_ENV": "production",
        "APP_ENV": n.environment,
        "PORT": str(APP_CONTAINER_PORT),
        "LOG_LEVEL": "info",
        "AWS_REGION": context.AWS_REGION,
        "DB_NAME": n.db_name,
        "REDIS_SENTINEL_MASTER": context.REDIS_MASTER_NAME,
        "PUBLIC_API_URL": f"https://{domain(n.environment)}",
        # The usage meter and quota enforcement, on (the rollout's usage_metering phase checks them).
        "USAGE_METER_ENABLED": "true",
        "QUOTA_ENFORCEMENT_ENABLED": "true",
    }
    return {
        "family": n.app_task_family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "1024",
        "memory": "2048",
        "executionRoleArn": f"arn:aws:iam::{account_id}:role/{n.prefix}-ecs-execution",
        "taskRoleArn": f"arn:aws:iam::{account_id}:role/{n.prefix}-app-task",
        "containerDefinitions": [
            {
                "name": APP_CONTAINER_NAME,
                "image": image,
                "essential": True,
                "portMappings": [{"containerPort": APP_CONTAINER_PORT, "protocol": "tcp"}],
                "environment": [{"name": k, "value": v} for k, v in environment.items()],
                # ECS resolves "<secret arn>:<json key>::" to that key of the secret's JSON.
                "secrets": [{"name": key, "valueFrom": f"{secret_arn}:{key}::"} for key in APP_SECRET_KEYS],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": n.app_log_group,
                        "awslogs-region": context.AWS_REGION,
                        "awslogs-stream-prefix": APP_CONTAINER_NAME,
                    },
                },
                "healthCheck": {
                    "command": [
                        "CMD-SHELL",
                        f"curl -fsS http://localhost:{APP_CONTAINER_PORT}/health || exit 1",
                    ],
                    "interval": 15,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 30,
                },
            }
        ],
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


def _find_service(ecs: Any, cluster: str, name: str) -> dict | None:
    services = ecs.describe_services(cluster=cluster, services=[name])["services"]
    return next((s for s in services if s["status"] == "ACTIVE"), None)


def _ensure_service(
    ecs: Any, n: naming.ResourceNames, subnet_ids: list[str], sg_id: str, tg_arn: str, tags: dict[str, str]
) -> None:
    if _find_service(ecs, n.ecs_cluster_name, n.ecs_service_name):
        return
    ecs.create_service(
        cluster=n.ecs_cluster_name,
        serviceName=n.ecs_service_name,
        taskDefinition=f"{n.app_task_family}:{len(APP_IMAGES)}",
        desiredCount=APP_DESIRED_COUNT,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": subnet_ids,
                "securityGroups": [sg_id],
                "assignPublicIp": "DISABLED",
            }
        },
        loadBalancers=[
            {
                "targetGroupArn": tg_arn,
                "containerName": APP_CONTAINER_NAME,
                "containerPort": APP_CONTAINER_PORT,
            }
        ],
        # moto accepts but does not keep deploymentConfiguration: describe_services returns none.
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
        },
        healthCheckGracePeriodSeconds=60,
        tags=[{"key": k, "value": v} for k, v in tags.items()],
    )
