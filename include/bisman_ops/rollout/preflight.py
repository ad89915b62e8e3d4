"""Preflight: the checklist's environment, secrets, domain and certificate steps.

Everything here reads, except ``ensure_state_backend`` and ``store_generated_secrets``, which
the DAG runs only after every read-only check has passed (and only when a param allows). No
function returns or raises a secret's value: measurements describe secrets (length, bits, mode).
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import smtplib
import socket
from dataclasses import dataclass, field
from typing import Any

from bisman_ops.naming import ResourceNames
from bisman_ops.rollout.gates import GateFailed, Poke, fail_unless

HTTP_TIMEOUT_S = 10
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
        raise GateFailed(
            f"Terraform {version} is older than the required {minimum}; install Terraform "
            f">= {minimum} on the workers (or point BISMAN_TERRAFORM_BIN at one), then clear "
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
        fail_unless(
            problems, "Terraform state backend not ready", f"Nothing was changed; {hint}.", state.as_dict()
        )
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


def read_app_secret(sm: Any, secret_id: str) -> dict[str, str]:
    try:
        raw = sm.get_secret_value(SecretId=secret_id)["SecretString"]
    except Exception as exc:
        if _error_code(exc) == "ResourceNotFoundException":
            raise GateFailed(
                f"secret {secret_id} not found in Secrets Manager; create it with the Stripe "
                "keys and SMTP credentials (the rollout can generate only JWT_SECRET, "
                "DB_PASSWORD and REDIS_PASSWORD), then clear this task",
                {"secret": secret_id, "exists": False},
            ) from None
        raise
    try:
        values = json.loads(raw)
    except ValueError:
        raise GateFailed(
            f"secret {secret_id} is not a JSON object of KEY: value; fix its format", {"secret": secret_id}
        ) from None
    if not isinstance(values, dict):
        raise GateFailed(f"secret {secret_id} is not a JSON object", {"secret": secret_id})
    return {str(k): str(v) for k, v in values.items() if v is not None}


def stripe_key_authenticates(api_base: str, key: str, timeout: float = HTTP_TIMEOUT_S) -> dict[str, Any]:
    """A cheap authenticated read (list one customer). Raises GateFailed when Stripe refuses the key."""
    import requests

    url = f"{api_base.rstrip('/')}/v1/customers"
    try:
        response = requests.get(url, params={"limit": 1}, auth=(key, ""), timeout=timeout)
    except requests.RequestException as exc:
        raise GateFailed(
            f"Stripe API at {api_base} unreachable ({type(exc).__name__}); check the "
            "network path and the bisman_stripe connection, then clear this task",
            {"stripe_api": api_base},
        ) from None
    if response.status_code in (401, 403):
        raise GateFailed(
            f"Stripe refused STRIPE_SECRET_KEY (HTTP {response.status_code} on GET /v1/customers);"
            " replace the key in Secrets Manager, then clear this task",
            {"stripe_status": response.status_code},
        )
    if response.status_code != 200:
        raise GateFailed(
            f"Stripe answered HTTP {response.status_code} to GET /v1/customers; check Stripe's "
            "status, then clear this task",
            {"stripe_status": response.status_code},
        )
    return {"stripe_api": api_base, "stripe_status": 200}


def smtp_logs_in(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    use_ssl: bool = False,
    starttls: bool = False,
    timeout: float = SMTP_TIMEOUT_S,
    label: str = "SMTP",
) -> dict:
    """Log in to the SMTP server for real. Raises GateFailed naming the server, never the password."""
    try:
        smtp_class = smtplib.SMTP_SSL if use_ssl else smtplib.SMTP
        with smtp_class(host, port, timeout=timeout) as smtp:
            smtp.ehlo()
            if starttls:
                smtp.starttls()
                smtp.ehlo()
            smtp.login(user, password)
    except smtplib.SMTPAuthenticationError as exc:
        raise GateFailed(
            f"{label} credentials refused by {host}:{port} (SMTP {exc.smtp_code}); fix them in "
            "Secrets Manager or the connection, then clear this task",
            {"smtp_server": f"{host}:{port}", "smtp_code": exc.smtp_code},
        ) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise GateFailed(
            f"{label} login at {host}:{port} failed ({type(exc).__name__}); check the server "
            "and the smtp_default connection, then clear this task",
            {"smtp_server": f"{host}:{port}"},
        ) from None
    return {"smtp_server": f"{host}:{port}", "login": "accepted"}


def generate_secret_values(keys: list[str]) -> dict[str, str]:
    """Fresh random values: 64 bytes of entropy for the JWT secret, 32 for passwords."""
    generated = {}
    for key in keys:
        if key not in GENERATABLE_KEYS:
            raise ValueError(f"{key} cannot be generated; it comes from a provider")
        generated[key] = secrets.token_urlsafe(64 if key == "JWT_SECRET" else 32)
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
    raise GateFailed(
        f"domain {domain} neither resolves nor has a public Route 53 hosted zone with name servers; "
        "register it or delegate it to a Route 53 zone (NS records at the registrar), then clear this task",
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
        raise GateFailed(
            f"ACM certificate {cert['CertificateArn']} for {domain} FAILED validation "
            f"({cert.get('FailureReason', 'no reason given')}); request a new one",
            measured,
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
