"""Infrastructure rollback: apply an earlier git revision of the Terraform configuration.

``plan_request`` checks the request and resolves the revision (default: the commit before the
current one among those touching the Terraform directory); ``checkout`` exports that revision into
a fresh work directory with ``git archive`` — the operator's working tree is never touched;
``plan`` runs ``terraform init`` and ``plan -out`` there and summarises it (stateful destroys
first) for the approval; ``apply`` applies exactly that saved plan, after checking the plan file is
the one approved (sha256).

The variables (``terraform.tfvars`` and any other variable file git does not track) are those the
last rollout left in the Terraform directory: the rollback reverts the configuration, not the inputs.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bisman_ops.rollback import RollbackFailed, RollbackRefused, check_confirm, resource_names

GIT_TIMEOUT_S = 60
PLAN_FILE = "rollback.tfplan"
INPUT_PATTERNS = ("terraform.tfvars", "terraform.tfvars.json", "*.auto.tfvars", "*.auto.tfvars.json")
WORK_ROOT_ENV = "BISMAN_ROLLBACK_WORK_DIR"
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
    )
    if check and result.returncode != 0:
        raise RollbackFailed(f"git {' '.join(args)} in {repo} failed: {result.stderr.strip()[:300]}")
    return result


def _has_terraform_files(names: list[str]) -> bool:
    return any(n.endswith((".tf", ".tf.json")) for n in names)


@dataclass
class InfraRollbackPlan:
    environment: str
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
    """Check the request and resolve the revision; raises RollbackRefused, changes nothing."""
    resource_names(environment)
    check_confirm(confirm, environment, "the environment name")
    tf_dir = Path(terraform_dir)
    if not tf_dir.is_dir():
        raise RollbackRefused(f"terraform_dir {terraform_dir} is not a directory. Nothing was changed.")
    top = _git(tf_dir, "rev-parse", "--show-toplevel", check=False)
    if top.returncode != 0:
        raise RollbackRefused(
            f"terraform_dir {terraform_dir} is not inside a git repository; an infrastructure "
            "rollback needs the configuration's history. Nothing was changed."
        )
    repo = Path(top.stdout.strip())
    subdir = _git(tf_dir, "rev-parse", "--show-prefix").stdout.strip().rstrip("/")
    history = commits_touching(repo, subdir)
    if not history:
        raise RollbackRefused(f"no commit touches {terraform_dir}. Nothing was changed.")
    current = history[0]

    if git_ref:
        if not _REF.match(git_ref) or git_ref.startswith("-"):
            raise RollbackRefused(
                f"git_ref {git_ref!r} is not a commit, tag or branch name. Nothing was changed."
            )
        resolved = _git(
            repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{git_ref}^{{commit}}", check=False
        )
        if resolved.returncode != 0:
            raise RollbackRefused(
                f"git ref {git_ref!r} does not exist in {repo}; see `git -C {repo} log "
                f"--oneline -- {subdir or '.'}`. Nothing was changed."
            )
        target = resolved.stdout.strip()
        resolved_by = f"git_ref {git_ref}"
    else:
        if len(history) < 2:
            raise RollbackRefused(
                f"{terraform_dir} has only one commit; there is no earlier revision to roll "
                "back to. Nothing was changed."
            )
        target = history[1]
        resolved_by = "the commit before the current one touching the Terraform directory"

    listing = _git(
        repo, "ls-tree", "--name-only", f"{target}:{subdir}" if subdir else f"{target}:", check=False
    )
    if listing.returncode != 0 or not _has_terraform_files(listing.stdout.split()):
        raise RollbackRefused(
            f"revision {git_ref or target[:12]} has no Terraform configuration in "
            f"{subdir or 'the repository root'} (no *.tf or *.tf.json files). "
            "Nothing was changed."
        )
    subject = _git(repo, "log", "-n1", "--format=%s", target).stdout.strip()
    return InfraRollbackPlan(
        environment=environment,
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


def work_dir_for(run_stamp: str, environ: dict | None = None) -> Path:
    env = os.environ if environ is None else environ
    root = Path(env.get(WORK_ROOT_ENV) or Path(os.environ.get("TMPDIR", "/tmp")) / "bisman-rollbacks")
    return root / f"infra-{run_stamp}"


def checkout(plan: InfraRollbackPlan, work_dir: Path) -> Path:
    """Export the revision's Terraform directory into ``work_dir`` (emptied first); copy the live
    directory's terraform.tfvars; returns the directory to run Terraform in."""
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, mode=0o700)
    archive = subprocess.run(
        [
            "git",
            "-C",
            plan.repo_root,
            "archive",
            "--format=tar",
            plan.target_commit,
            "--",
            plan.subdir or ".",
        ],
        capture_output=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    if archive.returncode != 0:
        raise RollbackFailed(
            f"git archive {plan.target_commit[:12]} failed: {archive.stderr.decode(errors='replace')[:300]}"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(work_dir, filter="data")
    config_dir = work_dir / plan.subdir if plan.subdir else work_dir
    for live_vars in live_input_files(plan):
        shutil.copy2(live_vars, config_dir / live_vars.name)
        (config_dir / live_vars.name).chmod(0o600)
    return config_dir


def live_input_files(plan: InfraRollbackPlan) -> list[Path]:
    """Variable files in the live Terraform directory that git does not track (terraform.tfvars
    written by the rollout, machine-local *.auto.tfvars): inputs, not configuration."""
    live = Path(plan.terraform_dir)
    found = []
    for pattern in INPUT_PATTERNS:
        for path in sorted(live.glob(pattern)):
            tracked = _git(live, "ls-files", "--error-unmatch", "--", path.name, check=False).returncode == 0
            if path.is_file() and not tracked:
                found.append(path)
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_plan(config_dir: Path, env: dict[str, str] | None = None) -> dict:
    """init + plan -out in ``config_dir``; returns the summary dict plus the plan file and its sha256."""
    from bisman_ops.terraform import Terraform, TerraformError, summarize_plan

    tf = Terraform(workdir=config_dir, env=env)
    try:
        version = tf.version()
        tf.init()
        has_changes = tf.plan(PLAN_FILE)
        summary = summarize_plan(tf.show_json(PLAN_FILE))
    except TerraformError as exc:
        raise RollbackFailed(
            f"terraform plan of the reverted configuration failed: {exc}; {getattr(exc, 'stderr', '')[:1500]}"
        ) from None
    plan_path = config_dir / PLAN_FILE
    return {
        "terraform_version": version,
        "has_changes": has_changes,
        "summary": summary.to_dict(),
        "markdown": summary.to_markdown(),
        "plan_file": str(plan_path),
        "plan_sha256": sha256_file(plan_path),
    }


def apply_plan(config_dir: Path, plan_sha256: str, env: dict[str, str] | None = None) -> dict:
    """Apply the saved plan, refusing a plan file other than the one summarised for approval."""
    from bisman_ops.terraform import Terraform, TerraformError

    plan_path = config_dir / PLAN_FILE
    if not plan_path.exists():
        raise RollbackFailed(
            f"saved plan {plan_path} is gone; nothing was applied. Trigger the rollback again."
        )
    seen = sha256_file(plan_path)
    if seen != plan_sha256:
        raise RollbackFailed(
            f"saved plan {plan_path} changed since it was approved (sha256 {seen[:12]} != "
            f"{plan_sha256[:12]}); nothing was applied. Trigger the rollback again."
        )
    tf = Terraform(workdir=config_dir, env=env)
    try:
        tf.apply(PLAN_FILE)
        outputs = tf.outputs()
    except TerraformError as exc:
        raise RollbackFailed(
            f"terraform apply of the approved plan failed: {exc}; "
            f"{getattr(exc, 'stderr', '')[:1500]} — the state may be partly applied: run "
            "plan in the Terraform directory to see what remains"
        ) from None
    return outputs
