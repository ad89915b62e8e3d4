"""Post-deploy security checks, each a plain function of boto3 clients and Terraform's outputs that
returns what it measured or raises CheckFailed listing every problem at once: the WAF on the load
balancer, security groups closed to the world on the data ports, the database not public, and no
application secret in the application's logs or plaintext environment.

Secret values are compared here and never leave: what is reported is which key leaked where."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from bisman_ops.change.errors import CheckFailed, fail_unless

# PostgreSQL, Redis, PgBouncer: never reachable from the internet.
DATA_PORTS = (5432, 6379, 6432)
WORLD = ("0.0.0.0/0", "::/0")
# Optional Terraform output (docs/contract-additions.md): groups besides the application's that the
# database's group may admit, e.g. PgBouncer's.
DB_CLIENT_GROUPS_OUTPUT = "db_client_security_group_ids"
MIN_SECRET_LEN = 8  # shorter values (a port, "true") would match by chance, not leak
# One leak scan's time budget: a scan with pages left past it fails as incomplete (never passes).
LOG_SCAN_BUDGET_S = 300.0


# -- WAF ----------------------------------------------------------------------------------------


def waf_verdict(wafv2: Any, alb_arn: str, web_acl_arn: str) -> dict[str, Any]:
    """Terraform's web ACL is the one associated with the load balancer, and it has rules."""
    acl = wafv2.get_web_acl_for_resource(ResourceArn=alb_arn).get("WebACL")
    problems, measured = [], {"load_balancer": alb_arn, "expected_web_acl": web_acl_arn}
    if not acl:
        problems.append("no web ACL is associated with the load balancer")
    else:
        rules = [r["Name"] for r in acl.get("Rules") or []]
        measured.update(web_acl=acl["Name"], rules=rules,
                        default_action="block" if "Block" in (acl.get("DefaultAction") or {}) else "allow")
        if acl["ARN"] != web_acl_arn:
            problems.append(f"the load balancer's web ACL is {acl['Name']} ({acl['ARN']}), not Terraform's")
        if not rules:
            problems.append(f"web ACL {acl['Name']} has no rules")
    fail_unless(problems, "WAF on the load balancer", "Terraform's web ACL associated, with rules",
                "Associate the web ACL (terraform apply, or `aws wafv2 associate-web-acl`), then clear "
                "this task",
                measured)
    return measured


# -- security groups ----------------------------------------------------------------------------


def _covers(permission: Mapping[str, Any], port: int) -> bool:
    if permission.get("IpProtocol") in ("-1", "all"):
        return True
    if permission.get("IpProtocol") not in ("tcp", "6"):
        return False
    return int(permission.get("FromPort", -1)) <= port <= int(permission.get("ToPort", -1))


def _world_sources(permission: Mapping[str, Any]) -> list[str]:
    cidrs = [r.get("CidrIp", "") for r in permission.get("IpRanges") or []]
    cidrs += [r.get("CidrIpv6", "") for r in permission.get("Ipv6Ranges") or []]
    return [c for c in cidrs if c in WORLD]


def security_group_problems(groups: Iterable[Mapping[str, Any]], db_group_id: str,
                            allowed_group_ids: Iterable[str]) -> list[str]:
    """Every data port open to the world in any group, and every source the database's group
    admits other than ``allowed_group_ids`` (the groups allowed to reach the database)."""
    problems, allowed = [], set(allowed_group_ids)
    for group in groups:
        label = f"{group['GroupId']} ({group.get('GroupName', '?')})"
        for perm in group.get("IpPermissions") or []:
            for port in DATA_PORTS:
                for source in _world_sources(perm) if _covers(perm, port) else []:
                    problems.append(f"{label} opens {port} to {source}")
            if group["GroupId"] != db_group_id:
                continue
            others = [p["GroupId"] for p in perm.get("UserIdGroupPairs") or [] if p["GroupId"] not in allowed]
            cidrs = [r.get("CidrIp") or r.get("CidrIpv6") for key in ("IpRanges", "Ipv6Ranges")
                     for r in perm.get(key) or []]
            prefixes = [p.get("PrefixListId") for p in perm.get("PrefixListIds") or []]
            for source in [*others, *cidrs, *prefixes]:
                problems.append(f"the database's group {label} admits {source}, not an allowed source group")
    return problems


def db_client_groups(outputs: Mapping[str, Any]) -> list[str]:
    """Terraform's ``db_client_security_group_ids``: the groups besides the application's that the
    database's group may admit (PgBouncer's, in the usual layout). Optional: absent means none."""
    value = outputs.get(DB_CLIENT_GROUPS_OUTPUT)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(g, str) and g.startswith("sg-") for g in value):
        raise CheckFailed(f"Terraform output {DB_CLIENT_GROUPS_OUTPUT}", f"{value!r}"[:200],
                          "a list of security group ids (sg-...)",
                          "Fix the output in the Terraform configuration, then clear this task")
    return list(value)


def security_group_verdict(ec2: Any, ecs: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """The VPC's groups (the database group's VPC) against ``security_group_problems``; the
    database may admit the ECS service's groups and Terraform's ``db_client_security_group_ids``."""
    db_group_id = outputs["db_security_group_id"]
    client_groups = db_client_groups(outputs)
    db_group = ec2.describe_security_groups(GroupIds=[db_group_id])["SecurityGroups"][0]
    groups = []
    for page in ec2.get_paginator("describe_security_groups").paginate(
            Filters=[{"Name": "vpc-id", "Values": [db_group["VpcId"]]}]):
        groups += page["SecurityGroups"]
    service = ecs.describe_services(cluster=outputs["ecs_cluster_name"],
                                    services=[outputs["ecs_service_name"]])["services"][0]
    network = service.get("networkConfiguration", {}).get("awsvpcConfiguration", {})
    app_groups = network.get("securityGroups", [])
    measured = {"vpc": db_group["VpcId"], "groups_checked": len(groups), "data_ports": list(DATA_PORTS),
                "database_group": db_group_id, "application_groups": sorted(app_groups),
                "database_client_groups": sorted(client_groups)}
    problems = security_group_problems(groups, db_group_id, [*app_groups, *client_groups])
    if not app_groups:
        problems.append(f"the ECS service {outputs['ecs_service_name']} names no security group")
    fail_unless(problems, "security groups", f"no data port ({', '.join(map(str, DATA_PORTS))}) open to "
                "the world; the database admitting only the application's groups and those of "
                f"Terraform's {DB_CLIENT_GROUPS_OUTPUT}",
                "Remove the rules named (Terraform's security group resources), or list a legitimate "
                f"client's group in the {DB_CLIENT_GROUPS_OUTPUT} output, then clear this task",
                measured)
    return measured


# -- database not public ------------------------------------------------------------------------


class ServiceExposure(Protocol):
    """Where a deployment's data services listen, beyond what RDS reports (AWS: nothing more to
    say; the sandbox's services are local processes)."""

    def listen_addresses(self) -> dict[str, list[str]]:
        """``{service: [address, ...]}`` of every listening socket."""
        ...


class RdsOnly:
    """AWS: ``PubliclyAccessible`` is the whole truth about an RDS instance's reachability."""

    def listen_addresses(self) -> dict[str, list[str]]:
        return {}


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return address == "localhost"


def database_exposure(rds: Any, outputs: Mapping[str, Any], exposure: ServiceExposure) -> dict[str, Any]:
    """RDS ``PubliclyAccessible`` false for the primary and the replica, and every listen address
    the deployment reports on loopback."""
    problems, instances = [], {}
    for role, key in (("primary", "db_instance_identifier"), ("replica", "db_replica_identifier")):
        db = rds.describe_db_instances(DBInstanceIdentifier=outputs[key])["DBInstances"][0]
        instances[role] = {"identifier": outputs[key],
                           "publicly_accessible": bool(db.get("PubliclyAccessible"))}
        if db.get("PubliclyAccessible"):
            problems.append(f"the {role} {outputs[key]} is publicly accessible")
    listening = exposure.listen_addresses()
    for service, addresses in sorted(listening.items()):
        problems += [f"{service} listens on {a}, not loopback" for a in addresses if not _loopback(a)]
    measured = {"instances": instances, "listen_addresses": listening}
    fail_unless(problems, "database reachability", "no public database, services on private addresses",
                "Set publicly_accessible = false (Terraform) or bind the service to a private address, "
                "then clear this task", measured)
    return measured


# -- secrets in logs and environment ------------------------------------------------------------


def _comparable(secret: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in secret.items() if len(value) >= MIN_SECRET_LEN}


def environment_leaks(task_definition: Mapping[str, Any], secret: Mapping[str, str]) -> list[str]:
    """A secret's value in a container's plaintext environment, or a secret key given there
    instead of through a ``secrets`` reference: ``KEY in ...`` (never the value)."""
    leaks, values = [], _comparable(secret)
    for container in task_definition.get("containerDefinitions") or []:
        where = f"the plaintext environment of container {container.get('name', '?')}"
        env = {e.get("name", ""): str(e.get("value", "")) for e in container.get("environment") or []}
        for key in secret:
            if key in env:
                leaks.append(f"{key} in {where} (as {key}, not a secrets reference)")
        for key, value in values.items():
            leaks += [f"{key} in {where} (as {name})"
                      for name, v in env.items() if value in v and name != key]
    return leaks


def log_leaks(events: Iterable[str], secret: Mapping[str, str], where: str) -> list[str]:
    """Each secret key whose value appears in one of ``events``: ``KEY in WHERE (n events)``."""
    counts = dict.fromkeys(_comparable(secret), 0)
    for message in events:
        for key, value in _comparable(secret).items():
            if value in message:
                counts[key] += 1
    return [f"{key} in {where} ({n} event{'s' if n > 1 else ''})" for key, n in counts.items() if n]


def recent_log_messages(logs: Any, group: str, window_s: float, now: Callable[[], float] = time.time, *,
                        budget_s: float = LOG_SCAN_BUDGET_S, max_pages: int | None = None,
                        clock: Callable[[], float] = time.monotonic):
    """Every message of ``group`` of the last ``window_s`` seconds, page by page to the last page.

    A scan that has pages left after ``budget_s`` seconds (or ``max_pages`` pages) raises CheckFailed
    saying how far it got: an unread page may hold a leak, so a partial scan never passes."""
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": int((now() - window_s) * 1000)}
    started, pages, events = clock(), 0, 0
    while True:
        page = logs.filter_log_events(**kwargs)
        pages += 1
        for event in page.get("events") or []:
            events += 1
            yield event.get("message", "")
        if not page.get("nextToken"):
            return
        elapsed = clock() - started
        if elapsed >= budget_s or (max_pages is not None and pages >= max_pages):
            limits = f"{budget_s:.0f} s" + (f" or {max_pages} pages" if max_pages is not None else "")
            raise CheckFailed(
                f"scan of log group {group} for secrets",
                f"incomplete: {pages} pages, {events} events read in {elapsed:.0f} s and more pages left",
                f"every event of the last {window_s / 60:.0f} min read within {limits}",
                "Narrow secret_scan_window_minutes (or find what floods the log), then clear this task; "
                "the unread events may hold a leak",
                {"log_group": group, "window_s": window_s, "pages_scanned": pages, "events_scanned": events,
                 "elapsed_s": round(elapsed, 1), "budget_s": budget_s, "max_pages": max_pages})
        kwargs["nextToken"] = page["nextToken"]


def secret_leaks(secret: Mapping[str, str], task_definition: Mapping[str, Any], log_group: str,
                 messages: Iterable[str]) -> dict[str, Any]:
    """No value of ``secret`` in the log messages or the task definition's environment, and every
    secret key reaching the task through ``secrets``. Raises naming key and place only."""
    scanned = list(messages)
    leaks = [*log_leaks(scanned, secret, f"log group {log_group}"),
             *environment_leaks(task_definition, secret)]
    referenced = {s.get("name") for c in task_definition.get("containerDefinitions") or []
                  for s in c.get("secrets") or []}
    missing = sorted(set(secret) - referenced)
    measured = {"task_definition": task_definition.get("taskDefinitionArn", "?"), "log_group": log_group,
                "log_events_scanned": len(scanned), "keys_compared": sorted(secret),
                "keys_not_referenced": missing, "leaks": leaks}
    fail_unless(leaks, "application secrets in logs and environment", "no secret value in either",
                "Rotate every key named (it has been exposed), remove it from the log statement or the "
                "environment (use the task definition's secrets), then clear this task", measured)
    return measured
