"""Preflight: the checklist's environment, secrets, domain and certificate steps.

Everything here reads, except ``ensure_state_backend`` and ``store_generated_secrets``, which
the DAG runs only after every read-only check has passed (and only when a param allows). No
function returns or raises a secret's value: measurements describe secrets (length, bits, mode).

The checks take plain values and clients; the tasks at the end (the DAG's ``preflight`` group) get
the clients from the Airflow connections and pass the validated settings along as XCom.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bisman_ops.change.errors import CheckFailed, fail_unless
from bisman_ops.change.phase import Phase, phase
from bisman_ops.change.step import Poke, Result, context, step
from bisman_ops.naming import ResourceNames
from bisman_ops.rollout.settings import RolloutSettings

TERRAFORM_MINIMUM = "1.5.0"
SMTP_TIMEOUT_S = 10
DNS_TIMEOUT_S = 5
MIN_JWT_BITS = 256
MIN_PASSWORD_CHARS = 20
MIN_DISTINCT_CHARS = 10
DENIED_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
}
KNOWN_WEAK = {"password", "changeme", "secret", "admin", "letmein", "123456", "qwerty"}

# Keys of the application's secret the rollout requires; the first three it may generate.
GENERATABLE_KEYS = ("JWT_SECRET", "DB_PASSWORD", "REDIS_PASSWORD")
REQUIRED_KEYS = (
    *GENERATABLE_KEYS,
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "SMTP_USER",
    "SMTP_PASSWORD",
)
STRIPE_MODE = {"staging": "sk_test_", "prod": "sk_live_"}
# Keys of the application's secret holding identifiers, not secrets: logs may show their values.
IDENTIFIER_KEYS = ("STRIPE_PRICE_ID_FREE", "STRIPE_PRICE_ID_PRO", "STRIPE_PRICE_ID_ENTERPRISE",
                   "STRIPE_WEBHOOK_ENDPOINT_ID")


def _error_code(exc: Exception) -> str:
    from bisman_ops.clients.aws import error_code

    return error_code(exc)


# -- AWS identity and permissions ---------------------------------------------------------------


def aws_identity(sts: Any) -> dict[str, str]:
    identity = sts.get_caller_identity()
    return {"account": identity["Account"], "arn": identity["Arn"], "user_id": identity["UserId"]}


def read_probes(names: ResourceNames) -> list[tuple[str, str, dict]]:
    """(service, operation, kwargs): the read calls the rollout makes, on the resources it reads.

    They prove permission by doing: a call answered with anything but an authorization error was
    permitted (a "not found" is fine: preflight reports missing resources on its own).
    """
    return [
        ("s3", "list_objects_v2", {"Bucket": names.state_bucket, "MaxKeys": 1}),
        ("dynamodb", "describe_table", {"TableName": names.lock_table}),
        ("secretsmanager", "describe_secret", {"SecretId": names.app_secret_name}),
        ("rds", "describe_db_instances", {"DBInstanceIdentifier": names.db_instance_identifier}),
        ("cloudwatch", "list_metrics", {"Namespace": "AWS/RDS", "MetricName": "ReplicaLag"}),
        ("logs", "describe_log_groups", {"logGroupNamePrefix": names.app_log_group}),
        ("acm", "list_certificates", {"MaxItems": 1}),
        ("route53", "list_hosted_zones", {"MaxItems": "1"}),
        ("ecs", "describe_clusters", {"clusters": [names.ecs_cluster_name]}),
        ("elbv2", "describe_load_balancers", {"PageSize": 1}),
    ]


def probe_permissions(client_for, names: ResourceNames) -> dict[str, str]:
    """``{"service:Operation": "allowed" | "denied (Code)" | "error (...)"}`` for ``read_probes``."""
    results: dict[str, str] = {}
    for service, operation, kwargs in read_probes(names):
        label = f"{service}:{''.join(w.capitalize() for w in operation.split('_'))}"
        try:
            getattr(client_for(service), operation)(**kwargs)
            results[label] = "allowed"
        except Exception as exc:  # classified below; anything but a denial proves the permission
            code = _error_code(exc)
            if code in DENIED_CODES:
                results[label] = f"denied ({code})"
            elif code:
                results[label] = "allowed"  # answered with a business error (not found, ...)
            else:
                results[label] = f"error ({type(exc).__name__})"
    return results


# -- Terraform ----------------------------------------------------------------------------------


def terraform_version_check(version: str, minimum: str) -> dict[str, str]:
    from bisman_ops.terraform import version_at_least

    if not version_at_least(version, minimum):
        raise CheckFailed(
            "Terraform version", version, f">= {minimum}",
            "Install a newer Terraform on the workers (or point BISMAN_TERRAFORM_BIN at one), then clear "
            "this task",
            {"terraform_version": version, "minimum": minimum},
        )
    return {"terraform_version": version, "minimum": minimum}


# -- state backend ------------------------------------------------------------------------------


@dataclass
class StateBackend:
    bucket: str
    table: str
    bucket_exists: bool = False
    versioned: bool = False
    encrypted: bool = False
    table_exists: bool = False
    lock_id_hash_key_ok: bool = False

    def problems(self) -> list[str]:
        found = []
        if not self.bucket_exists:
            found.append(f"state bucket {self.bucket} does not exist")
        else:
            if not self.versioned:
                found.append(f"state bucket {self.bucket} is not versioned")
            if not self.encrypted:
                found.append(f"state bucket {self.bucket} has no default encryption")
        if not self.table_exists:
            found.append(f"lock table {self.table} does not exist")
        elif not self.lock_id_hash_key_ok:
            found.append(f"lock table {self.table} is not keyed by LockID (string), as Terraform needs")
        return found

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "table": self.table,
            "bucket_exists": self.bucket_exists,
            "versioned": self.versioned,
            "encrypted": self.encrypted,
            "table_exists": self.table_exists,
            "lock_id_hash_key_ok": self.lock_id_hash_key_ok,
        }


def inspect_state_backend(s3: Any, ddb: Any, bucket: str, table: str) -> StateBackend:
    state = StateBackend(bucket, table)
    try:
        s3.head_bucket(Bucket=bucket)
        state.bucket_exists = True
    except Exception as exc:
        if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    if state.bucket_exists:
        state.versioned = s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
        try:
            rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
            state.encrypted = bool(rules)
        except Exception as exc:
            if _error_code(exc) != "ServerSideEncryptionConfigurationNotFoundError":
                raise
    try:
        described = ddb.describe_table(TableName=table)["Table"]
        state.table_exists = True
        keys = {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]}
        types = {a["AttributeName"]: a["AttributeType"] for a in described["AttributeDefinitions"]}
        state.lock_id_hash_key_ok = keys == {"LockID": "HASH"} and types.get("LockID") == "S"
    except Exception as exc:
        if _error_code(exc) != "ResourceNotFoundException":
            raise
    return state


def state_backend_verdict(state: StateBackend, create_allowed: bool) -> dict[str, Any]:
    """Pass when the backend is complete, or when what is missing may be created; else fail."""
    problems = state.problems()
    fixable = [p for p in problems if "not keyed by LockID" not in p]
    if problems and (not create_allowed or len(fixable) != len(problems)):
        hint = (
            "trigger again with create_state_backend ticked to create them"
            if not create_allowed
            else "recreate the lock table with hash key LockID (S)"
        )
        fail_unless(problems, "Terraform state backend",
                    "bucket versioned and encrypted, lock table keyed by LockID",
                    f"Nothing was changed; {hint}", state.as_dict())
    return {**state.as_dict(), "to_create": problems}


def ensure_state_backend(
    s3: Any, ddb: Any, state: StateBackend, region: str, tags: dict[str, str]
) -> list[str]:
    """Create the bucket (versioned, encrypted, private) and the lock table where missing."""
    done: list[str] = []
    tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
    if not state.bucket_exists:
        kwargs: dict[str, Any] = {"Bucket": state.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**kwargs)
        s3.put_public_access_block(
            Bucket=state.bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_tagging(Bucket=state.bucket, Tagging={"TagSet": tag_list})
        done.append(f"created bucket {state.bucket}")
    if not state.versioned:
        s3.put_bucket_versioning(Bucket=state.bucket, VersioningConfiguration={"Status": "Enabled"})
        done.append(f"enabled versioning on {state.bucket}")
    if not state.encrypted:
        s3.put_bucket_encryption(
            Bucket=state.bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        done.append(f"enabled default encryption on {state.bucket}")
    if not state.table_exists:
        ddb.create_table(
            TableName=state.table,
            KeySchema=[{"AttributeName": "LockID", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "LockID", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            Tags=tag_list,
        )
        ddb.get_waiter("table_exists").wait(
            TableName=state.table, WaiterConfig={"Delay": 2, "MaxAttempts": 30}
        )
        done.append(f"created lock table {state.table}")
    return done


# -- secrets ------------------------------------------------------------------------------------


def secret_strength_problem(name: str, value: str, min_chars: int = MIN_PASSWORD_CHARS) -> str | None:
    """Why ``value`` is not a long random secret, or None. The message never contains the value."""
    if len(value) < min_chars:
        return f"{name} has {len(value)} characters (at least {min_chars} needed)"
    distinct = len(set(value))
    if distinct < MIN_DISTINCT_CHARS:
        return f"{name} uses only {distinct} distinct characters (not random)"
    if max(value.count(c) for c in set(value)) > len(value) / 3:
        return f"{name} repeats one character in over a third of it (not random)"
    if value.lower() in KNOWN_WEAK:
        return f"{name} is a well-known weak value"
    return None


def jwt_secret_problem(value: str) -> str | None:
    bits = len(value.encode()) * 8
    if bits < MIN_JWT_BITS:
        return f"JWT_SECRET is {bits} bits (at least {MIN_JWT_BITS} needed)"
    return secret_strength_problem("JWT_SECRET", value, min_chars=MIN_JWT_BITS // 8)


def stripe_mode_problem(key: str, environment: str) -> str | None:
    wanted = STRIPE_MODE[environment]
    if not key.startswith(wanted):
        seen = next(
            (
                p
                for p in ("sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_")
                if key.startswith(p)
            ),
            "an unrecognised prefix",
        )
        return f"STRIPE_SECRET_KEY starts with {seen}; {environment} needs a {wanted} key"
    return None


def describe_secret_value(name: str, value: str) -> str:
    """What the report may say about a secret: its shape, never its content."""
    if name == "STRIPE_SECRET_KEY":
        return f"{value[:8]}… ({len(value)} chars)"
    if name == "SMTP_USER":
        return f"set ({len(value)} chars)"
    bits = len(value.encode()) * 8
    return f"{len(value)} chars, {len(set(value))} distinct, {bits} bits"


@dataclass
class SecretsVerdict:
    problems: list[str] = field(default_factory=list)
    to_generate: list[str] = field(default_factory=list)
    measured: dict[str, str] = field(default_factory=dict)


def check_app_secrets(values: dict[str, str], environment: str, generate_allowed: bool) -> SecretsVerdict:
    """Presence, strength and Stripe mode of the application's secrets (no network)."""
    verdict = SecretsVerdict()
    for key in REQUIRED_KEYS:
        value = values.get(key)
        if not value:
            if key in GENERATABLE_KEYS and generate_allowed:
                verdict.to_generate.append(key)
                verdict.measured[key] = "missing: will be generated"
            else:
                hint = " (or tick generate_missing_secrets)" if key in GENERATABLE_KEYS else ""
                verdict.problems.append(f"{key} is missing{hint}")
            continue
        verdict.measured[key] = describe_secret_value(key, value)
        if key == "JWT_SECRET":
            problem = jwt_secret_problem(value)
        elif key in ("DB_PASSWORD", "REDIS_PASSWORD"):
            problem = secret_strength_problem(key, value)
        elif key == "STRIPE_SECRET_KEY":
            problem = stripe_mode_problem(value, environment)
        elif key == "STRIPE_WEBHOOK_SECRET":
            problem = (
                None if value.startswith("whsec_") else "STRIPE_WEBHOOK_SECRET does not start with whsec_"
            )
        else:
            problem = None
        if problem:
            verdict.problems.append(problem)
    return verdict


def mask_app_secret(values: dict) -> None:
    """Each value of the application's secret (identifiers excepted) into Airflow's secret masker,
    as soon as it is read."""
    from bisman_ops.change.redact import mask_in_logs

    mask_in_logs(*(str(v) for k, v in values.items() if k not in IDENTIFIER_KEYS and v is not None))


def read_app_secret(sm: Any, secret_id: str) -> dict[str, str]:
    """The application secret's JSON object, every value masked in the logs from here on."""
    try:
        raw = sm.get_secret_value(SecretId=secret_id)["SecretString"]
    except Exception as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            raise CheckFailed(
                f"secret {secret_id} in Secrets Manager", "not found", "a JSON object of KEY: value",
                "Create it with the Stripe keys and SMTP credentials (the rollout can generate only "
                "JWT_SECRET, DB_PASSWORD and REDIS_PASSWORD), then clear this task",
                {"secret": secret_id, "exists": False},
            ) from None
        raise
    from bisman_ops.change.redact import mask_in_logs

    mask_in_logs(raw)  # before parsing: whatever the parser's error might show
    try:
        values = json.loads(raw)
    except ValueError:
        values = None
    if not isinstance(values, dict):
        raise CheckFailed(f"secret {secret_id}", "not a JSON object", "a JSON object of KEY: value",
                          "Fix its format, then clear this task", {"secret": secret_id})
    mask_app_secret(values)
    return {str(k): str(v) for k, v in values.items() if v is not None}


def stripe_key_authenticates(key: str, conn_id: str | None = None) -> dict[str, Any]:
    """A cheap authenticated read through the Stripe SDK (list one customer), with the key from
    Secrets Manager on the Stripe connection's API base. Raises CheckFailed when it is refused."""
    from bisman_ops import config
    from bisman_ops.clients import stripe as stripe_client

    client = stripe_client.client_from_connection(conn_id or config.STRIPE_CONN_ID, api_key=key)
    check = stripe_client.check_key(client)
    if not check.ok:
        raise CheckFailed("STRIPE_SECRET_KEY against the Stripe API", check.problem,
                          "HTTP 200 to GET /v1/customers",
                          "Replace the key in Secrets Manager (or check the network path and the "
                          "bisman_stripe connection), then clear this task", check.as_dict())
    return {"stripe_status": check.status}


def smtp_logs_in(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    use_ssl: bool = False,
    starttls: bool = False,
    tls: ssl.SSLContext | None = None,
    timeout: float = SMTP_TIMEOUT_S,
    label: str = "SMTP",
) -> dict:
    """Log in to the SMTP server for real, over SSL or STARTTLS with ``tls`` (default: verifying
    against the system trust store; ``bisman_ops.clients.smtp_tls.context``), so the server's
    certificate is checked before the password is sent. Raises CheckFailed naming the server, never
    the password."""
    from bisman_ops.clients import smtp_tls

    where, measured = f"{label} login at {host}:{port}", {"smtp_server": f"{host}:{port}"}
    if not (use_ssl or starttls):
        raise CheckFailed(where, "neither SSL nor STARTTLS enabled", "a login over TLS",
                          "Enable SSL or STARTTLS on the smtp_default connection (its disable_ssl and "
                          "disable_tls extras), then clear this task; the password was not sent", measured)
    tls = tls or smtp_tls.context({})
    try:
        if use_ssl:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=tls)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if starttls:
                smtp.starttls(context=tls)  # smtplib's own default would verify nothing
                smtp.ehlo()
            smtp.login(user, password)
    except smtplib.SMTPAuthenticationError as exc:
        raise CheckFailed(
            where, f"credentials refused (SMTP {exc.smtp_code})",
            "login accepted",
            "Fix them in Secrets Manager or the connection, then clear this task",
            {**measured, "smtp_code": exc.smtp_code},
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise CheckFailed(where, "the server offers no STARTTLS; the password was not sent",
                          "a login over TLS",
                          "Enable STARTTLS on the server, or SSL on the connection, then clear this task",
                          measured) from None
    except (OSError, smtplib.SMTPException) as exc:
        if refused := smtp_tls.verify_failure(exc):
            raise CheckFailed(
                where, f"TLS certificate not verified ({refused}); the password was not sent",
                "a certificate that verifies against the connection's ca_file or the system trust store",
                "Fix the server's certificate, or set the smtp_default connection's ca_file extra to the "
                "CA that issued it, then clear this task", measured,
            ) from None
        raise CheckFailed(
            where, f"failed ({type(exc).__name__})", "login accepted",
            "Check the server and the smtp_default connection, then clear this task", measured,
        ) from None
    return {**measured, "login": "accepted", "tls": "SSL" if use_ssl else "STARTTLS"}


def generate_secret_values(keys: list[str]) -> dict[str, str]:
    """Fresh random values: 64 bytes of entropy for the JWT secret, 32 for passwords (masked in the
    logs from the moment they exist)."""
    from bisman_ops.change.redact import mask_in_logs

    generated = {}
    for key in keys:
        if key not in GENERATABLE_KEYS:
            raise ValueError(f"{key} cannot be generated; it comes from a provider")
        generated[key] = secrets.token_urlsafe(64 if key == "JWT_SECRET" else 32)
        mask_in_logs(generated[key])
    return generated


def store_generated_secrets(sm: Any, secret_id: str, keys: list[str]) -> list[str]:
    """Add generated values for ``keys`` still missing (re-read first: a retry does not regenerate)."""
    current = read_app_secret(sm, secret_id)
    missing = [k for k in keys if not current.get(k)]
    if not missing:
        return []
    current.update(generate_secret_values(missing))
    sm.put_secret_value(SecretId=secret_id, SecretString=json.dumps(current))
    return missing


# -- domain and certificate -----------------------------------------------------------------------


def resolve(domain: str, timeout: float = DNS_TIMEOUT_S) -> list[str]:
    """The domain's addresses, [] when it does not resolve within ``timeout``."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        future = pool.submit(socket.getaddrinfo, domain, 443, proto=socket.IPPROTO_TCP)
        return sorted({info[4][0] for info in future.result(timeout=timeout)})
    except (OSError, concurrent.futures.TimeoutError):
        return []
    finally:
        pool.shutdown(wait=False)


def hosted_zone_for(route53: Any, domain: str) -> dict | None:
    """The public hosted zone whose name is the longest suffix of ``domain``."""
    zones: list[dict] = []
    for page in route53.get_paginator("list_hosted_zones").paginate():
        zones += page["HostedZones"]
    best = None
    for zone in zones:
        name = zone["Name"].rstrip(".")
        if zone.get("Config", {}).get("PrivateZone"):
            continue
        if (domain == name or domain.endswith("." + name)) and (
            best is None or len(name) > len(best["Name"])
        ):
            best = zone
    return best


def _record_sets(route53: Any, zone_id: str) -> list[dict]:
    records: list[dict] = []
    for page in route53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        records += page["ResourceRecordSets"]
    return records


def domain_check(route53: Any, domain: str, resolver=resolve) -> dict[str, Any]:
    """Pass when the domain resolves, or when Route 53 hosts a public zone for it with name servers
    (delegated: the ACM DNS validation and the ALB alias will be written there)."""
    addresses = resolver(domain)
    zone = hosted_zone_for(route53, domain)
    measured: dict[str, Any] = {"domain": domain, "resolves_to": addresses}
    if zone:
        records = _record_sets(route53, zone["Id"])
        ns = [r for r in records if r["Type"] == "NS" and r["Name"].rstrip(".") == zone["Name"].rstrip(".")]
        measured.update(
            {
                "hosted_zone": zone["Name"].rstrip("."),
                "hosted_zone_id": zone["Id"].split("/")[-1],
                "name_servers": [rr["Value"] for r in ns for rr in r.get("ResourceRecords", [])],
                "record_present": any(r["Name"].rstrip(".") == domain for r in records),
            }
        )
    if addresses or (zone and measured["name_servers"]):
        return measured
    raise CheckFailed(
        f"domain {domain}", "neither resolves nor has a public Route 53 hosted zone with name servers",
        "an address, or a delegated Route 53 zone",
        "Register it or delegate it to a Route 53 zone (NS records at the registrar), then clear this task",
        measured,
    )


def _certificate_for(acm: Any, domain: str) -> dict | None:
    """The newest ACM certificate covering ``domain`` (exact or wildcard), preferring ISSUED."""
    candidates = []
    for page in acm.get_paginator("list_certificates").paginate(
        CertificateStatuses=["PENDING_VALIDATION", "ISSUED", "FAILED"]
    ):
        for summary in page["CertificateSummaryList"]:
            names = {summary["DomainName"], *summary.get("SubjectAlternativeNameSummaries", [])}
            parent = domain.split(".", 1)[1] if "." in domain else ""
            if domain in names or f"*.{parent}" in names:
                candidates.append(
                    acm.describe_certificate(CertificateArn=summary["CertificateArn"])["Certificate"]
                )
    if not candidates:
        return None
    candidates.sort(key=lambda c: (c["Status"] == "ISSUED", str(c.get("CreatedAt", ""))), reverse=True)
    return candidates[0]


def certificate_poke(acm: Any, route53: Any, domain: str) -> Poke:
    cert = _certificate_for(acm, domain)
    if cert is None:
        return Poke(
            False,
            {"domain": domain, "certificate": None},
            f"no ACM certificate requested for {domain}; request one with DNS validation",
        )
    measured = {"domain": domain, "certificate_arn": cert["CertificateArn"], "status": cert["Status"]}
    if cert["Status"] == "ISSUED":
        return Poke(True, measured)
    if cert["Status"] == "FAILED":
        raise CheckFailed(
            f"ACM certificate {cert['CertificateArn']} for {domain}",
            f"FAILED validation ({cert.get('FailureReason', 'no reason given')})", "ISSUED",
            "Request a new one, then clear this task", measured,
        )
    zone = hosted_zone_for(route53, domain)
    present = set()
    if zone:
        present = {(r["Name"].rstrip(".").lower(), r["Type"]) for r in _record_sets(route53, zone["Id"])}
    missing = []
    for option in cert.get("DomainValidationOptions", []):
        record = option.get("ResourceRecord")
        if record and (record["Name"].rstrip(".").lower(), record["Type"]) not in present:
            missing.append(f"{record['Type']} {record['Name']} -> {record['Value']}")
    measured["missing_validation_records"] = missing
    where = f"Route 53 zone {zone['Name'].rstrip('.')}" if zone else "the domain's DNS"
    waiting = (
        f"validation record(s) missing in {where}: {', '.join(missing)}"
        if missing
        else "validation records are present; ACM has not validated yet"
    )
    return Poke(False, measured, f"certificate for {domain} still {cert['Status']}: {waiting}")


# -- tasks: the DAG's preflight group -------------------------------------------------------------


def aws(service: str) -> Any:
    from bisman_ops.clients import aws as aws_client

    return aws_client.client(service)


@step(lease=False)
def rollout_params_valid() -> Result:
    """The form, validated once: every later task gets these settings (XCom), not the raw params."""
    s = RolloutSettings.from_params(dict(context()["params"]))
    return Result(value=s.as_dict(), measured={
        "environment": s.environment, "replica_failure_drill": s.replica_failure_drill,
        "terraform_dir": s.terraform_dir, "lag_threshold_s": s.replica_lag_threshold_s})


@step(lease=False)
def aws_identity_and_permissions(settings: dict) -> dict:
    s = RolloutSettings.from_dict(settings)
    identity = aws_identity(aws("sts"))
    probes = probe_permissions(aws, s.names)
    denied = [f"{call}: {result}" for call, result in probes.items() if result != "allowed"]
    measured = {
        "identity": identity,
        "read_calls": probes,
        "write_calls": "not simulated: the rollout's writes (S3 report, DynamoDB lock, secret, RDS "
        "reboot) are proven when first made; iam:SimulatePrincipalPolicy is not available in every "
        "account or emulator",
    }
    fail_unless(denied, f"AWS permissions of {identity['arn']}", "every read call of the rollout allowed",
                "Grant them to the rollout's role, then clear this task", measured)
    return measured


@step(lease=False)
def terraform_version_supported(settings: dict) -> dict:
    from bisman_ops.rollout import core_infrastructure
    from bisman_ops.terraform import TerraformError

    s = RolloutSettings.from_dict(settings)
    tf = core_infrastructure.terraform_session(s, "version")
    try:
        tf.prepare_from_directory(s.terraform_dir)  # Terraform runs in the session's directory
        version = tf.version()
    except TerraformError as exc:
        raise CheckFailed("Terraform on this worker", str(exc), "a working terraform",
                          "Install Terraform on the workers, then clear this task") from None
    finally:
        tf.cleanup()
    return terraform_version_check(version, TERRAFORM_MINIMUM)


@step(lease=False)
def state_backend_checked(settings: dict) -> dict:
    s = RolloutSettings.from_dict(settings)
    state = inspect_state_backend(aws("s3"), aws("dynamodb"), s.names.state_bucket, s.names.lock_table)
    return state_backend_verdict(state, s.create_state_backend)


@step(lease=False)
def app_secrets_valid(settings: dict) -> Result:
    """Secrets present, strong and in the right Stripe mode; the Stripe key and the SMTP
    credentials (the application's and the alert connection's) tried for real. Its value tells
    ``missing_secrets_generated`` which keys to generate."""
    from airflow.sdk import BaseHook

    from bisman_ops import config
    from bisman_ops.clients import smtp_tls

    s = RolloutSettings.from_dict(settings)
    values = read_app_secret(aws("secretsmanager"), s.names.app_secret_name)
    verdict = check_app_secrets(values, s.environment, s.generate_missing_secrets)
    measured: dict[str, Any] = {"secret_name": s.names.app_secret_name, "values": verdict.measured,
                                "to_generate": verdict.to_generate}
    problems = list(verdict.problems)
    if values.get("STRIPE_SECRET_KEY") and not any(p.startswith("STRIPE_SECRET_KEY") for p in problems):
        try:
            measured["stripe"] = stripe_key_authenticates(values["STRIPE_SECRET_KEY"])
        except CheckFailed as exc:
            problems.append(f"{exc.checked}: {exc.seen}")
    smtp = BaseHook.get_connection(config.SMTP_CONN_ID)
    extra = smtp.extra_dejson or {}
    use_ssl, starttls = not extra.get("disable_ssl", False), not extra.get("disable_tls", False)
    logins = []
    if values.get("SMTP_USER") and values.get("SMTP_PASSWORD"):
        logins.append(("application SMTP credentials", values["SMTP_USER"], values["SMTP_PASSWORD"]))
    if smtp.login:
        logins.append((f"alert connection {config.SMTP_CONN_ID}", smtp.login, smtp.password or ""))
    measured["smtp"] = {}
    try:
        tls = smtp_tls.context(extra, config.SMTP_CONN_ID)  # the connection's CA, or the system's
    except smtp_tls.SmtpTlsError as exc:
        problems.append(str(exc))
        logins = []  # no login without a certificate check
    for label, user, password in logins:
        try:
            measured["smtp"][label] = smtp_logs_in(smtp.host, int(smtp.port or 25), user, password,
                                                   use_ssl=use_ssl, starttls=starttls, tls=tls, label=label)
        except CheckFailed as exc:
            problems.append(f"{exc.checked}: {exc.seen}")
    fail_unless(problems, f"application secrets in {s.names.app_secret_name}",
                "every secret present, strong, in the environment's Stripe mode and accepted",
                "Fix them in Secrets Manager, then clear this task. Nothing was changed", measured)
    return Result(value={"to_generate": verdict.to_generate}, measured=measured)


@step(lease=False)
def domain_resolves_or_delegated(settings: dict) -> dict:
    return domain_check(aws("route53"), RolloutSettings.from_dict(settings).domain_name)


@step.sensor(lease=False, poke_interval=timedelta(seconds=30), timeout_param="certificate_timeout_seconds")
def certificate_issued(settings: dict) -> Poke:
    return certificate_poke(aws("acm"), aws("route53"), RolloutSettings.from_dict(settings).domain_name)


@step(lease=False, changes=True)
def state_backend_ready(settings: dict) -> dict:
    """Create what the check found missing (the check already refused unless create_state_backend).
    Before the change lock: the lock lives in the table this may create."""
    s = RolloutSettings.from_dict(settings)
    s3, ddb = aws("s3"), aws("dynamodb")
    state = inspect_state_backend(s3, ddb, s.names.state_bucket, s.names.lock_table)
    if not state.problems():
        return {"created": []}
    state_backend_verdict(state, s.create_state_backend)
    tags = {"Project": s.project_name, "Environment": s.environment, "ManagedBy": "bisman-ops"}
    return {"created": ensure_state_backend(s3, ddb, state, s.aws_region, tags)}


@step(changes=True)
def missing_secrets_generated(settings: dict, secrets_checked: dict) -> dict:
    s = RolloutSettings.from_dict(settings)
    wanted = (secrets_checked or {}).get("to_generate", [])
    if not wanted:
        return {"generated": []}
    return {"generated": store_generated_secrets(aws("secretsmanager"), s.names.app_secret_name, wanted)}


@step
def preflight_gate(settings: dict) -> dict:
    return {"environment": settings["environment"], "passed": True}


@phase
def preflight() -> Phase:
    """Read-only checks first; then the state backend, the change lock and the missing secrets."""
    from airflow.sdk import chain

    from bisman_ops.change import lock

    settings = rollout_params_valid()
    secrets_ = app_secrets_valid(settings)
    checks = [
        aws_identity_and_permissions(settings),
        terraform_version_supported(settings),
        state_backend_checked(settings),
        secrets_,
        domain_resolves_or_delegated(settings),
        certificate_issued(settings),
    ]
    acquired = lock.acquire_change_lock(note="bisman_rollout of {{ params.app_image }}")
    gate = preflight_gate(settings)
    chain(checks, state_backend_ready(settings), acquired, missing_secrets_generated(settings, secrets_),
          gate)
    return Phase(gate=gate, value=settings, lock=acquired)
