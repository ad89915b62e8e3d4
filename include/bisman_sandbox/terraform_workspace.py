"""The sandbox's Terraform working tree: the configuration of include/bisman_sandbox/terraform as a git
repository under the state folder, the way operators keep infra/terraform in git.

Its history has two commits, so "the commit before the current one" (the infrastructure rollback's
default) exists: the baseline with two application tasks, then the current one with three. This
sandbox's ports and moto ids go into ``sandbox.auto.tfvars.json``, which Terraform reads
automatically; like ``terraform.tfvars`` it is an input of this machine, not configuration, so git
ignores it (a rollback's clean checkout copies the live directory's untracked variable files). The
state is shared through the stand-in's backend folder, so a clean checkout initialised with the same
backend sees the same state, as with a real S3 backend.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bisman_sandbox.context import PROJECT_ROOT, SandboxContext

SOURCE_DIR = PROJECT_ROOT / "include" / "bisman_sandbox" / "terraform"
TERRAFORM_BIN = PROJECT_ROOT / "include" / "bisman_sandbox" / "bin" / "terraform"
GIT_IDENTITY = ["-c", "user.name=bisman-sandbox", "-c", "user.email=sandbox@bisman.test"]
IGNORED = [".terraform/", "terraform.tfstate*", "*.tfplan", "tfplan", "terraform.tfvars",
           "*.auto.tfvars.json", ".terraform.tfstate.lock.info"]


def workspace_dir(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "terraform" / "infra"


def backend_dir(ctx: SandboxContext) -> Path:
    return ctx.state_dir / "terraform" / "backend"


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


def _write_config(repo: Path, desired_count: int) -> None:
    for src in SOURCE_DIR.glob("*.tf.json"):
        config = json.loads(src.read_text())
        service = config.get("resource", {}).get("aws_ecs_service", {}).get("app")
        if service is not None:
            service["desired_count"] = desired_count
        (repo / src.name).write_text(json.dumps(config, indent=2) + "\n")


def up(ctx: SandboxContext) -> dict[str, str]:
    repo = workspace_dir(ctx)
    repo.mkdir(parents=True, exist_ok=True)
    backend_dir(ctx).mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", "main")
        (repo / ".gitignore").write_text("\n".join(IGNORED) + "\n")
        _write_config(repo, desired_count=2)
        _commit_if_changed(repo, "BISMAN ERP infrastructure: baseline")
        _write_config(repo, desired_count=3)
        _commit_if_changed(repo, "Scale the application service to three tasks")
    from bisman_sandbox import aws
    from bisman_sandbox.terraform_standin import write_sandbox_tfvars

    write_sandbox_tfvars(repo, ctx.ports, aws.seeded(ctx))
    return {"Terraform dir": str(repo), "terraform binary": f"{TERRAFORM_BIN} (stand-in)"}


def down(ctx: SandboxContext) -> None:
    """Nothing runs; the working tree and its state stay until the state folder is removed."""


def healthy(ctx: SandboxContext) -> bool:
    return (workspace_dir(ctx) / ".git").exists() and TERRAFORM_BIN.exists()


def connections(ctx: SandboxContext) -> dict[str, dict]:
    return {}


def settings(ctx: SandboxContext) -> dict[str, str]:
    """Environment the DAGs' Terraform calls run with in the sandbox."""
    return {
        "BISMAN_TERRAFORM_BIN": str(TERRAFORM_BIN),
        "TF_STANDIN_BACKEND_DIR": str(backend_dir(ctx)),
    }


def reset(ctx: SandboxContext) -> None:
    """Forget the applied state (tests that need a never-applied environment)."""
    shutil.rmtree(backend_dir(ctx), ignore_errors=True)
    shutil.rmtree(workspace_dir(ctx) / ".terraform", ignore_errors=True)
