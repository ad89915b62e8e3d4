"""The sandbox's Terraform: the configuration of include/bisman_sandbox/terraform as a git repository
under the state folder (the way operators keep infra/terraform in git), run by real Terraform (the
project's ``bisman_ops.terraform_cli``) with its state in moto's S3 and its lock in moto's DynamoDB.

The repository's history has two commits, so "the commit before the current one" (the infrastructure
rollback's default) exists: the baseline with two application tasks, then the current one with three.

This machine's inputs (where the local services listen, the ids moto gave the seeded resources of
each environment, the database password) are not configuration: ``up`` writes them to
``terraform/sandbox-inputs.json`` in the state folder and ``settings`` hands them to the processes
that run Terraform as ``TF_VAR_sandbox`` and ``TF_VAR_sandbox_db_password``. Nothing is written into
the Terraform directory itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bisman_sandbox import context
from bisman_sandbox.context import HOST, PROJECT_ROOT, SandboxContext

SOURCE_DIR = PROJECT_ROOT / "include" / "bisman_sandbox" / "terraform"
TERRAFORM_BIN = PROJECT_ROOT / "include" / "bisman_sandbox" / "bin" / "terraform"
GIT_IDENTITY = ["-c", "user.name=bisman-sandbox", "-c", "user.email=sandbox@bisman.test"]
IGNORED = [".terraform/", "terraform.tfstate*", "*.tfplan", "terraform.tfvars", "*.auto.tfvars.json",
           ".terraform.tfstate.lock.info"]
DESIRED_COUNT = re.compile(r"(app_desired_count\s*=\s*)\d+")
SEEDED_KEYS = ("app_secrets_arn", "alb_arn", "alb_dns_name", "certificate_arn", "waf_web_acl_arn",
               "db_security_group_id", "app_security_group_id", "pgbouncer_security_group_id")


def workspace_dir(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "terraform" / "infra"


def inputs_path(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "terraform" / "sandbox-inputs.json"


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *GIT_IDENTITY, *args], cwd=repo, capture_output=True, text=True,
                         timeout=30, check=False)
    if out.returncode != 0:
        from bisman_sandbox.process import SandboxError

        raise SandboxError(f"git {' '.join(args)} in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def _commit_if_changed(repo: Path, message: str) -> None:
    _git(repo, "add", "-A")
    if _git(repo, "status", "--porcelain"):
        _git(repo, "commit", "-q", "-m", message)


def write_config(repo: Path, desired_count: int) -> None:
    """The sandbox's configuration into ``repo``, with the application service at ``desired_count``."""
    for src in sorted(SOURCE_DIR.glob("*.tf")):
        text = src.read_text()
        if src.name == "main.tf":
            text, found = DESIRED_COUNT.subn(rf"\g<1>{desired_count}", text)
            if found != 1:
                raise ValueError(f"{src} must set app_desired_count exactly once")
        (repo / src.name).write_text(text)


def init_repo(repo: Path) -> dict[str, str]:
    """A git repository holding the configuration: baseline (two tasks), then three tasks."""
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("\n".join(IGNORED) + "\n")
    write_config(repo, desired_count=2)
    _commit_if_changed(repo, "BISMAN ERP infrastructure: baseline")
    baseline = _git(repo, "rev-parse", "HEAD")
    write_config(repo, desired_count=3)
    _commit_if_changed(repo, "Scale the application service to three tasks")
    return {"baseline": baseline, "current": _git(repo, "rev-parse", "HEAD")}


def sandbox_inputs(ports: dict[str, int], seeded: dict[str, Any]) -> dict[str, Any]:
    """``var.sandbox``: the local services' ports and, per environment, what moto seeded (a mapping
    environment -> object or mapping with the SEEDED_KEYS)."""
    def value(resources: Any, key: str) -> str:
        return str(resources.get(key) if isinstance(resources, dict) else getattr(resources, key))

    return {
        "host": HOST,
        "app_port": ports["app"],
        "pgbouncer_port": ports["pgbouncer"],
        "redis_port": ports["redis_primary"],
        "db_primary_port": ports["postgres_primary"],
        "db_replica_port": ports["postgres_replica"],
        "environments": {env: {k: value(res, k) for k in SEEDED_KEYS} for env, res in seeded.items()},
    }


def _seeded_environments(ctx: SandboxContext) -> dict[str, Any]:
    from bisman_sandbox import aws

    environments = getattr(aws, "SEEDED_ENVIRONMENTS", (context.ENVIRONMENT,))
    if len(environments) == 1:
        return {environments[0]: aws.seeded(ctx)}
    return {env: aws.seeded(ctx, env) for env in environments}


def up(ctx: SandboxContext) -> dict[str, str]:
    repo = workspace_dir(ctx)
    # A sandbox state folder from before the configuration was HCL holds a main.tf.json there:
    # make the repository again (harmless otherwise).
    if (repo / "main.tf.json").exists():
        shutil.rmtree(repo)
    if not (repo / ".git").exists():
        init_repo(repo)
    inputs = {"sandbox": sandbox_inputs(ctx.ports, _seeded_environments(ctx)),
              "sandbox_db_password": context.DB_PASSWORD}
    path = inputs_path(ctx)
    path.write_text(json.dumps(inputs, indent=2) + "\n")
    path.chmod(0o600)
    return {"Terraform dir": str(repo), "terraform": "python -m bisman_ops.terraform_cli (Terraform 1.15)"}


def down(ctx: SandboxContext) -> None:
    """Nothing runs; the repository stays until the state folder is removed, the state with moto."""


def healthy(ctx: SandboxContext) -> bool:
    return (workspace_dir(ctx) / ".git").exists() and inputs_path(ctx).exists()


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {}


def settings(ctx: SandboxContext) -> dict[str, str]:
    """Environment of the processes that run Terraform in the sandbox: this machine's inputs."""
    path = inputs_path(ctx)
    if not path.exists():
        return {}
    inputs = json.loads(path.read_text())
    return {
        "TF_VAR_sandbox": json.dumps(inputs["sandbox"]),
        "TF_VAR_sandbox_db_password": inputs["sandbox_db_password"],
    }
