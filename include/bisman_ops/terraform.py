"""Terraform, driven as a subprocess: version, init, tfvars, plan, show, apply, outputs.

One way for every DAG to run Terraform. Every command has a timeout, runs with ``-input=false``
and ``-no-color``, and its stderr is redacted before it reaches an exception or a log: the
environment's secret-looking values and every value passed to ``write_tfvars`` or ``secrets=`` are
replaced by ``***``. The binary is ``BISMAN_TERRAFORM_BIN`` (default ``terraform``).

``summarize_plan`` turns ``terraform show -json PLAN`` into the counts and lists a human approves,
with any destroy or replace of a stateful resource (database, Redis) listed first.
``check_outputs`` checks ``terraform output -json`` against CONTRACT.md's list.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BINARY_ENV = "BISMAN_TERRAFORM_BIN"
MINIMUM_VERSION = "1.5.0"
DEFAULT_TIMEOUT_S = 1800  # an apply that creates an RDS instance takes long
QUICK_TIMEOUT_S = 120  # version, show, output
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

_SECRET_ENV_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|CREDENTIAL|PRIVATE|_KEY$|^TF_VAR_)", re.IGNORECASE)
_SECRET_VAR_NAME = re.compile(r"(secret|password|token|key|credential)", re.IGNORECASE)
_MIN_REDACT_LEN = 4  # shorter values would redact common words


class TerraformError(RuntimeError):
    """A Terraform command that failed; ``stderr`` is already redacted."""

    def __init__(self, command: str, message: str, *, returncode: int | None = None, stderr: str = ""):
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        tail = f": {stderr.strip()[-2000:]}" if stderr.strip() else ""
        super().__init__(f"terraform {command} {message}{tail}")


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
        self.binary = binary or os.environ.get(BINARY_ENV) or "terraform"
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

    def plan(self, out: str | Path) -> bool:
        """``plan -out=OUT -detailed-exitcode``: True when the plan has changes (exit 2), False when
        there are none (exit 0); any other exit raises TerraformError."""
        args = ["plan", "-input=false", "-no-color", "-detailed-exitcode", f"-out={out}"]
        result = self._exec(args, self.timeout)
        if result.returncode == 0:
            return False
        if result.returncode == 2:
            return True
        raise self._error("plan", result)

    def show_json(self, plan_file: str | Path) -> dict:
        out = self._run(["show", "-json", "-no-color", str(plan_file)], "show", timeout=QUICK_TIMEOUT_S)
        try:
            return json.loads(out)
        except ValueError as exc:
            raise TerraformError("show -json", "printed no JSON") from exc

    def apply(self, plan_file: str | Path) -> str:
        """Apply exactly the saved plan ``plan_file`` (Terraform refuses it if the state moved on)."""
        return self._run(["apply", "-input=false", "-no-color", str(plan_file)], "apply")

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

    def _exec(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        command = args[0]
        try:
            return subprocess.run(
                [self.binary, *args],
                cwd=self.workdir,
                env={**os.environ, **self.env, "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as exc:
            raise TerraformError(
                command, f"not run: no Terraform binary {self.binary!r} (set {BINARY_ENV})"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            stderr = self.redact(_text(exc.stderr))
            raise TerraformError(
                command, f"killed after {timeout:.0f} s; if it held the state lock, release it with "
                "`terraform force-unlock` once nothing else runs", stderr=stderr,
            ) from None

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
    type: str
    action: str  # create, update, delete, replace


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
            lines += [f"- **{c.action.upper()}** `{c.address}` ({c.type})" for c in self.stateful_at_risk]
            lines.append("")
        lines.append(f"**Plan:** {self.adds} to add, {self.changes} to change, {self.destroys} to destroy, "
                     f"{self.replaces} to replace.")
        if self.resource_changes:
            lines.append("")
            lines += [f"- {c.action} `{c.address}`" for c in self.resource_changes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        def as_dicts(changes: tuple[ResourceChange, ...]) -> list[dict]:
            return [{"address": c.address, "type": c.type, "action": c.action} for c in changes]

        return {
            "adds": self.adds,
            "changes": self.changes,
            "destroys": self.destroys,
            "replaces": self.replaces,
            "headline": self.headline(),
            "stateful_at_risk": as_dicts(self.stateful_at_risk),
            "resource_changes": as_dicts(self.resource_changes),
        }


def _action(actions: list[str]) -> str | None:
    kinds = set(actions)
    if kinds == {"delete", "create"}:
        return "replace"
    for kind in ("create", "update", "delete"):
        if kinds == {kind}:
            return kind
    return None  # no-op, read


def summarize_plan(plan_json: Mapping[str, Any]) -> PlanSummary:
    """Counts of ``terraform show -json`` resource changes; stateful destroys/replaces first."""
    changes: list[ResourceChange] = []
    for rc in plan_json.get("resource_changes") or []:
        action = _action(list((rc.get("change") or {}).get("actions") or []))
        if action:
            changes.append(ResourceChange(rc.get("address", "?"), rc.get("type", "?"), action))
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
        config["skip_credentials_validation"] = "true"
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
