"""Infrastructure rollback: apply an earlier git revision of the Terraform configuration.

``plan_request`` checks the request and resolves the revision (default: the commit before the
current one among those touching the Terraform directory). ``checkout_and_plan`` runs the one
Terraform session of the rollout (``bisman_ops.clients.terraform``) for the environment asked for:
that revision exported into a clean working directory with ``git archive`` (the operator's tree is
never touched), initialised with the environment's own backend (``<project>/<environment>/
terraform.tfstate`` in its state bucket, its lock table, the ``aws_default`` identity), planned with
the variables of that environment's last successful apply (the rollback reverts the configuration,
not the inputs; nothing is copied from a directory another environment writes to). The plan and its
configuration go to S3 with their SHA-256; ``apply_approved`` applies exactly that plan on any
worker, after checking both hashes, and Terraform refuses it if another apply made it stale.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bisman_ops.change.errors import CheckFailed
from bisman_ops.rollback import NOTHING_CHANGED, check_confirm, resource_names

GIT_TIMEOUT_S = 60
DEFAULT_REGION = "us-east-1"


def _refused(problem: str) -> CheckFailed:
    return CheckFailed("the infrastructure rollback request", problem.rstrip("."),
                       "a git revision with a Terraform configuration, of an environment rolled out before",
                       NOTHING_CHANGED)


def _failed(what: str, problem: str, next_step: str) -> CheckFailed:
    return CheckFailed(what, problem, "Terraform to succeed", next_step)


_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise _failed(f"git {' '.join(args)} in {repo}", result.stderr.strip()[:300],
                      "Fix the repository, then trigger again")
    return result


def _has_terraform_files(names: list[str]) -> bool:
    return any(n.endswith((".tf", ".tf.json")) for n in names)


@dataclass
class InfraRollbackPlan:
    environment: str
    project_name: str
    terraform_dir: str
    repo_root: str
    subdir: str  # the Terraform directory inside the repository ("" at its root)
    current_commit: str
    target_commit: str
    target_ref: str
    target_subject: str
    resolved_by: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> InfraRollbackPlan:
        return cls(**d)


def commits_touching(repo: Path, subdir: str, limit: int = 2) -> list[str]:
    out = _git(repo, "log", f"-n{limit}", "--format=%H", "--", subdir or ".").stdout
    return out.split()


def plan_request(
    *, environment: str, git_ref: str | None, terraform_dir: str, confirm: str | None
) -> InfraRollbackPlan:
    """Check the request and resolve the revision; raises CheckFailed, changes nothing."""
    names = resource_names(environment)
    check_confirm(confirm, environment, "the environment name")
    tf_dir = Path(terraform_dir)
    if not tf_dir.is_dir():
        raise _refused(f"terraform_dir {terraform_dir} is not a directory.")
    top = _git(tf_dir, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise _refused(
            f"terraform_dir {terraform_dir} is not inside a git repository; an infrastructure "
            "rollback needs the configuration's history."
        )
    repo = Path(top.stdout.strip())
    subdir = _git(tf_dir, "rev-parse", "--show-prefix").stdout.strip().rstrip("/")
    history = commits_touching(repo, subdir)
    if not history:
        raise _refused(f"no commit touches {terraform_dir}.")
    current = history[0]

    if git_ref:
        if not _REF.match(git_ref) or git_ref.startswith("-"):
            raise _refused(
                f"git_ref {git_ref!r} is not a commit, tag or branch name."
            )
        resolved = _git(
            repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{git_ref}^{{commit}}", check=False
        )
        if resolved.returncode != 0:
            raise _refused(
                f"git ref {git_ref!r} does not exist in {repo}; see `git -C {repo} log "
                f"--oneline -- {subdir or '.'}`."
            )
        target = resolved.stdout.strip()
        resolved_by = f"git_ref {git_ref}"
    else:
        if len(history) < 2:
            raise _refused(
                f"{terraform_dir} has only one commit; there is no earlier revision to roll "
                "back to."
            )
        target = history[1]
        resolved_by = "the commit before the current one touching the Terraform directory"

    listing = _git(
        repo, "ls-tree", "--name-only", f"{target}:{subdir}" if subdir else f"{target}:", check=False
    )
    if listing.returncode != 0 or not _has_terraform_files(listing.stdout.split()):
        raise _refused(
            f"revision {git_ref or target[:12]} has no Terraform configuration in "
            f"{subdir or 'the repository root'} (no *.tf or *.tf.json files)"
        )
    subject = _git(repo, "log", "-n1", "--format=%s", target).stdout.strip()
    return InfraRollbackPlan(
        environment=environment,
        project_name=names.project_name,
        terraform_dir=str(tf_dir.resolve()),
        repo_root=str(repo),
        subdir=subdir,
        current_commit=current,
        target_commit=target,
        target_ref=git_ref or target,
        target_subject=subject,
        resolved_by=resolved_by,
    )


def changed_files(plan: InfraRollbackPlan) -> list[list[str]]:
    """Rows [status, path] of what the revert changes in the Terraform directory."""
    out = _git(
        Path(plan.repo_root),
        "diff",
        "--name-status",
        plan.current_commit,
        plan.target_commit,
        "--",
        plan.subdir or ".",
    ).stdout
    return [line.split("\t", 1) for line in out.splitlines() if "\t" in line]


def session(request: InfraRollbackPlan, run_id: str, step: str, *, aws_region: str | None = None):
    """The Terraform session of ``request``'s environment for one step of this run."""
    from bisman_ops.clients.terraform import TerraformSession

    return TerraformSession(project_name=request.project_name, environment=request.environment,
                            aws_region=aws_region or _connection_region(), run_id=run_id, step=step)


def _connection_region() -> str:
    from bisman_ops.clients import aws

    try:
        return aws.hook("s3").conn_region_name or DEFAULT_REGION
    except Exception:  # no region on the connection: the recorded inputs name it next
        return DEFAULT_REGION


def environment_inputs(request: InfraRollbackPlan, run_id: str) -> dict[str, Any]:
    """The variables of the environment's last successful apply, checked to be that environment's."""
    from bisman_ops.clients.terraform import TerraformSessionError

    try:
        inputs = session(request, run_id, "inputs").recorded_inputs()
    except TerraformSessionError as exc:
        raise _refused(str(exc)) from None
    for key, expected in (("environment", request.environment), ("project_name", request.project_name)):
        if inputs.get(key, expected) != expected:
            raise _refused(
                f"the recorded inputs of {request.environment} name {key}={inputs.get(key)!r}, not "
                f"{expected!r}; refusing to plan with another environment's variables."
            )
    return inputs


def checkout_and_plan(request: InfraRollbackPlan, run_id: str) -> dict[str, Any]:
    """Export the target revision into the session's clean working directory and plan it against
    the environment's state with its own inputs; the plan and configuration are stored in S3.
    Returns the session's plan dict plus ``terraform_version``, ``inputs``, ``work_dir`` and
    ``state``; raises CheckFailed with Terraform's own message when Terraform fails."""
    from bisman_ops.clients.terraform import TerraformSessionError
    from bisman_ops.terraform import TerraformError

    inputs = environment_inputs(request, run_id)
    s = session(request, run_id, "plan", aws_region=inputs.get("aws_region"))
    try:
        s.prepare_from_git(request.repo_root, request.target_commit, request.subdir)
        s.write_tfvars(inputs)
        version = s.version()
        planned = s.plan()
    except TerraformSessionError as exc:
        raise _failed("the Terraform session", str(exc), NOTHING_CHANGED) from None
    except TerraformError as exc:
        raise terraform_failed("plan of the reverted configuration", exc, changed=False) from None
    finally:
        s.cleanup()  # what apply needs is in S3
    return {**planned, "terraform_version": version, "inputs": inputs, "work_dir": str(s.config_dir)}


def apply_approved(request: InfraRollbackPlan, planned: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Apply exactly the approved plan from S3 (hashes checked first) in a clean directory of this
    worker; returns ``{"applied", "already_applied", "outputs"}``."""
    from bisman_ops.clients.terraform import TerraformSessionError
    from bisman_ops.terraform import TerraformError

    s = session(request, run_id, "apply", aws_region=planned["inputs"].get("aws_region"))
    try:
        return s.apply(planned, inputs=planned["inputs"])
    except TerraformSessionError as exc:
        raise _failed("the approved plan", str(exc),
                      "Nothing was applied; trigger the rollback again") from None
    except TerraformError as exc:
        raise terraform_failed("apply of the approved plan", exc, changed=True) from None
    finally:
        s.cleanup()


def terraform_failed(what: str, exc: Exception, *, changed: bool) -> CheckFailed:
    """CheckFailed carrying Terraform's own message (and the id of a state lock held elsewhere)."""
    lock_id = getattr(exc, "lock_id", None)
    hint = (f"The state is locked by another Terraform run (lock id {lock_id}): wait for it, or once "
            f"nothing else runs, `terraform force-unlock {lock_id}`. " if lock_id else "")
    after = ("Terraform saved what it applied to the state: trigger this rollback again (its new plan "
             "shows what remains)" if changed else NOTHING_CHANGED)
    return _failed(f"terraform {what}", str(exc), hint + after)
