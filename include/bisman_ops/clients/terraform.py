"""One Terraform session for every DAG that changes infrastructure (the rollout and the
infrastructure rollback): which state, whose identity, which variables, where the plan lives.

- **State:** the S3 backend of the environment being changed, key ``<project>/<environment>/
  terraform.tfstate`` in that environment's state bucket, locked in its DynamoDB table. The
  configuration declares only ``backend "s3" {}``; every ``init`` gets the whole backend here, so a
  configuration (or an old commit of it) can never point a run at another environment's state.
- **Identity:** the Airflow AWS connection (``aws_default``): its keys, region and ``endpoint_url``
  (moto in the sandbox) go to Terraform's environment and the backend's endpoints.
- **Variables:** ``terraform.tfvars`` is written from the values the caller passes (the run's own
  settings), never copied from a directory. After a successful apply they are recorded in the
  environment's state bucket (``recorded_inputs``), so a later rollback of that environment plans
  with that environment's inputs.
- **Working directory:** fresh for each run and step (``<work root>/<project>-<env>/<run stamp>-
  <step>``), filled from a directory (its git-tracked files) or from a git revision (``git
  archive``; the operator's tree is never touched).
- **Plan files:** uploaded to the state bucket with the configuration they were made from, both
  with their SHA-256. ``apply`` works in a fresh directory on any worker: it downloads both, checks
  the hashes against the ones the approver saw, initialises the same backend and applies exactly that
  plan (Terraform itself refuses a plan made stale by another apply).

Values returned are plain (dicts of str/int/bool) for XCom; none holds a sensitive value.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bisman_ops import config
from bisman_ops import terraform as tf_cli
from bisman_ops.naming import ResourceNames

WORK_ROOT_ENV = "BISMAN_TERRAFORM_WORK_DIR"
GIT_TIMEOUT_S = 60
PLAN_FILE = "run.tfplan"
# Never part of the configuration a session runs: inputs it writes itself, state, plans, caches.
NOT_CONFIGURATION = (
    ".terraform",
    ".git",
    "terraform.tfvars",
    "terraform.tfvars.json",
    "*.tfstate",
    "*.tfstate.backup",
    "*.tfplan",
    ".terraform.tfstate.lock.info",
)
_STEP = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class TerraformSessionError(RuntimeError):
    """The session refused to go on (a plan file that is not the approved one, no recorded
    inputs, a configuration that cannot be exported); nothing was applied."""


def run_stamp(run_id: str) -> str:
    """A short, stable, path-safe name per DAG run (retries of a step reuse it)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", run_id).strip("-")[:40]
    return f"{readable}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class TerraformSession:
    """Terraform for one run against one environment's state.

    ``step`` names the working directory of this task (``plan``, ``apply``, ``outputs``, ...): every
    task gets a clean one, so nothing depends on a directory another task (or worker) left behind.
    """

    def __init__(
        self,
        *,
        project_name: str,
        environment: str,
        aws_region: str,
        run_id: str,
        step: str,
        conn_id: str = config.AWS_CONN_ID,
        extra_env: Mapping[str, str] | None = None,
        timeout_s: float = tf_cli.DEFAULT_TIMEOUT_S,
        work_root: str | Path | None = None,
    ):
        if not _STEP.match(step):
            raise ValueError(f"step {step!r} is not a short lowercase name")
        self.names = ResourceNames(project_name, environment)  # validates both
        self.aws_region = aws_region
        self.run_id = run_id
        self.step = step
        self.conn_id = conn_id
        self.extra_env = dict(extra_env or {})
        self.timeout_s = timeout_s
        default_root = Path(tempfile.gettempdir()) / "bisman-terraform"
        root = Path(work_root or os.environ.get(WORK_ROOT_ENV) or default_root)
        self.work_dir = root / self.names.prefix / f"{run_stamp(run_id)}-{step}"
        self.config_dir = self.work_dir  # where the configuration sits (a subdirectory for a git export)
        self._identity: tuple[dict[str, str], str | None] | None = None
        self._tf: tf_cli.Terraform | None = None
        self._initialised = False

    # -- where -----------------------------------------------------------------------------------
    @property
    def state_bucket(self) -> str:
        return self.names.state_bucket

    @property
    def state_key(self) -> str:
        return f"{self.names.project_name}/{self.names.environment}/terraform.tfstate"

    @property
    def inputs_key(self) -> str:
        """Where the variables of the environment's last successful apply are recorded."""
        return f"{self.names.project_name}/{self.names.environment}/terraform.inputs.json"

    def plan_key(self) -> str:
        return f"terraform-plans/{self.names.environment}/{run_stamp(self.run_id)}/{self.step}.tfplan"

    def backend(self) -> dict[str, Any]:
        """The ``-backend-config`` settings (no secrets: the identity is in the environment)."""
        _, endpoint = self._aws()
        return tf_cli.backend_config(
            self.names.project_name,
            self.names.environment,
            self.state_bucket,
            self.names.lock_table,
            self.aws_region,
            endpoint_url=endpoint,
        )

    def describe(self) -> dict[str, str]:
        """For reports and logs: which state and directory this session uses."""
        return {
            "state": f"s3://{self.state_bucket}/{self.state_key}",
            "lock_table": self.names.lock_table,
            "work_dir": str(self.config_dir),
        }

    # -- the configuration -----------------------------------------------------------------------
    def _fresh_work_dir(self) -> None:
        if self.work_dir.exists():
            shutil.rmtree(self.work_dir)
        self.work_dir.mkdir(parents=True, mode=0o700)
        self.config_dir = self.work_dir
        self._initialised = False
        self._tf = None

    def prepare_from_directory(self, source: str | Path) -> Path:
        """A clean working directory holding ``source``'s configuration: the files git tracks there
        (as they are in the work tree; untracked leftovers such as another run's variable files stay
        behind) when it is in a git work tree that tracks any, otherwise all its files; never state,
        plans, caches or ``terraform.tfvars`` (the session writes that)."""
        src = Path(source).resolve()
        if not src.is_dir():
            raise TerraformSessionError(f"Terraform directory {src} does not exist on this worker")
        files = _git_tracked(src)
        if not files:
            files = [p.relative_to(src) for p in src.rglob("*") if p.is_file() or p.is_symlink()]
        files = [f for f in files if not _excluded(f)]
        if not any(f.suffix == ".tf" or f.name.endswith(".tf.json") for f in files):
            raise TerraformSessionError(f"{src} holds no Terraform configuration (*.tf, *.tf.json)")
        self._fresh_work_dir()
        for rel in files:
            target = self.work_dir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, target)
        return self.config_dir

    def prepare_from_git(self, repo_root: str | Path, commit: str, subdir: str = "") -> Path:
        """A clean working directory holding ``subdir`` of ``commit`` (``git archive``: the repository's
        work tree and index are only read)."""
        self._fresh_work_dir()
        archive = subprocess.run(
            ["git", "-C", str(repo_root), "archive", "--format=tar", commit, "--", subdir or "."],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
        if archive.returncode != 0:
            raise TerraformSessionError(
                f"git archive {commit[:12]} failed: {archive.stderr.decode(errors='replace')[:300]}"
            )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(self.work_dir, filter="data")
        self.config_dir = self.work_dir / subdir if subdir else self.work_dir
        for rel in [p.relative_to(self.config_dir) for p in self.config_dir.rglob("*")]:
            if _excluded(rel) and (self.config_dir / rel).exists():
                path = self.config_dir / rel
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        return self.config_dir

    def write_tfvars(self, values: Mapping[str, Any]) -> Path:
        """``terraform.tfvars`` (mode 600) from ``values``: the run's own settings."""
        return self.terraform().write_tfvars(values)

    # -- Terraform -------------------------------------------------------------------------------
    def terraform(self) -> tf_cli.Terraform:
        if self._tf is None:
            env, _ = self._aws()
            self._tf = tf_cli.Terraform(
                workdir=self.config_dir, env={**env, **self.extra_env}, timeout=self.timeout_s
            )
        return self._tf

    def version(self) -> str:
        return self.terraform().version()

    def init(self) -> None:
        """``init -reconfigure`` with this environment's backend."""
        self.terraform().init(self.backend())
        self._initialised = True

    def plan(self) -> dict[str, Any]:
        """Init, ``plan -out -detailed-exitcode``, summarise; store the plan and its configuration
        in S3 with their SHA-256. Raises TerraformError (Terraform's own message: bad variables,
        a state lock held elsewhere with its id, ...)."""
        if not self._initialised:
            self.init()
        tf = self.terraform()
        plan_path = self.config_dir / PLAN_FILE
        has_changes = tf.plan(plan_path)
        summary = tf_cli.summarize_plan(tf.show_json(plan_path))
        key = self.plan_key()
        config_key = key.removesuffix(".tfplan") + ".config.tar.gz"
        bundle = self.work_dir.parent / f"{self.work_dir.name}.config.tar.gz"
        _bundle_configuration(self.config_dir, bundle)
        plan_sha, config_sha = sha256_file(plan_path), sha256_file(bundle)
        s3 = self._s3()
        s3.upload_file(str(plan_path), self.state_bucket, key, ExtraArgs={"Metadata": {"sha256": plan_sha}})
        s3.upload_file(
            str(bundle), self.state_bucket, config_key, ExtraArgs={"Metadata": {"sha256": config_sha}}
        )
        bundle.unlink()
        return {
            "environment": self.names.environment,
            "state": f"s3://{self.state_bucket}/{self.state_key}",
            "has_changes": has_changes,
            "headline": tf.redact(summary.headline()),
            "summary": summary.to_dict(),
            "markdown": tf.redact(summary.to_markdown()),
            "plan_key": key,
            "plan_uri": f"s3://{self.state_bucket}/{key}",
            "plan_sha256": plan_sha,
            "config_key": config_key,
            "config_sha256": config_sha,
        }

    def apply(self, planned: Mapping[str, Any], *, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Apply exactly the plan ``plan()`` returned (and a human approved), in a fresh working
        directory: both files downloaded from S3 and checked against their SHA-256 first, and the
        plan read (``show -json``) so that its sensitive values are redacted from any error. Once
        applied, ``inputs`` (the variables it was planned with) are recorded for the environment.
        A retry after a successful apply applies nothing again. Returns the outputs."""
        s3 = self._s3()
        marker = f"{planned['plan_key']}.applied"
        if _s3_text(s3, self.state_bucket, marker) == planned["plan_sha256"]:
            return {"applied": False, "already_applied": True, "outputs": self.outputs()}
        self._fresh_work_dir()
        bundle = self.work_dir / "config.tar.gz"
        s3.download_file(self.state_bucket, planned["config_key"], str(bundle))
        _verify(bundle, planned["config_sha256"], "configuration of the approved plan")
        with tarfile.open(bundle) as tar:
            tar.extractall(self.work_dir / "config", filter="data")
        bundle.unlink()
        self.config_dir = self.work_dir / "config"
        plan_path = self.config_dir / PLAN_FILE
        s3.download_file(self.state_bucket, planned["plan_key"], str(plan_path))
        _verify(plan_path, planned["plan_sha256"], "approved plan file")
        self.init()
        tf = self.terraform()
        tf.show_json(plan_path)  # learn the plan's sensitive values: an apply error is redacted of them
        tf.apply(plan_path)
        s3.put_object(Bucket=self.state_bucket, Key=marker, Body=planned["plan_sha256"].encode())
        if inputs is not None:
            self.record_inputs(inputs)
        return {"applied": True, "already_applied": False, "outputs": self.terraform().outputs()}

    def outputs(self) -> dict[str, Any]:
        """``output -json`` of the environment's state (sensitive outputs as "(sensitive)"), from a
        directory that needs nothing but the backend."""
        if not self._initialised:
            self._fresh_work_dir()
            (self.work_dir / "backend.tf").write_text('terraform {\n  backend "s3" {}\n}\n')
            self.init()
        return self.terraform().outputs()

    def cleanup(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- the environment's recorded inputs --------------------------------------------------------
    def record_inputs(self, values: Mapping[str, Any]) -> None:
        body = json.dumps({"run_id": self.run_id, "variables": dict(values)}, sort_keys=True, indent=2)
        self._s3().put_object(
            Bucket=self.state_bucket, Key=self.inputs_key, Body=body.encode(), ContentType="application/json"
        )

    def recorded_inputs(self) -> dict[str, Any]:
        """The variables of this environment's last successful apply (by a rollout or rollback)."""
        text = _s3_text(self._s3(), self.state_bucket, self.inputs_key)
        if text is None:
            raise TerraformSessionError(
                f"no recorded Terraform inputs for {self.names.environment} at "
                f"s3://{self.state_bucket}/{self.inputs_key}: no rollout has applied this environment "
                "through bisman-ops yet. Run the rollout of this environment first; nothing was changed."
            )
        return dict(json.loads(text)["variables"])

    # -- plumbing --------------------------------------------------------------------------------
    def _aws(self) -> tuple[dict[str, str], str | None]:
        """Terraform's environment from the AWS connection, and its endpoint URL (None for AWS)."""
        if self._identity is None:
            from bisman_ops.clients import aws

            hook = aws.hook("sts", self.conn_id)
            creds = hook.get_credentials()
            endpoint = hook.conn_config.get_service_endpoint_url(service_name="s3")
            env = tf_cli.aws_environment(
                creds.access_key, creds.secret_key, creds.token, self.aws_region, endpoint_url=endpoint
            )
            self._identity = (env, endpoint)
        return self._identity

    def _s3(self) -> Any:
        from bisman_ops.clients import aws

        return aws.client("s3", self.conn_id)


def _git_tracked(src: Path) -> list[Path] | None:
    """Files git tracks under ``src`` (None when ``src`` is not in a git work tree)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "ls-files", "-z", "--", "."],
            capture_output=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        return None
    if out.returncode != 0:
        return None
    return [Path(p) for p in out.stdout.decode().split("\0") if p and (src / p).is_file()]


def _excluded(rel: Path) -> bool:
    return any(part == ".terraform" or part == ".git" for part in rel.parts) or any(
        rel.match(pattern) for pattern in NOT_CONFIGURATION
    )


def _bundle_configuration(config_dir: Path, target: Path) -> None:
    """The configuration as planned (with ``.terraform.lock.hcl``, without ``.terraform`` caches,
    the plan or the variables file), so the apply can initialise the same configuration anywhere."""
    with tarfile.open(target, "w:gz") as tar:
        for path in sorted(config_dir.rglob("*")):
            rel = path.relative_to(config_dir)
            if path.is_file() and not _excluded(rel):
                tar.add(path, arcname=str(rel))


def _verify(path: Path, expected: str, what: str) -> None:
    seen = sha256_file(path)
    if seen != expected:
        raise TerraformSessionError(
            f"the {what} in S3 has SHA-256 {seen}, the approved one is {expected}; refusing to apply. "
            "Plan and approve again."
        )


def _s3_text(s3: Any, bucket: str, key: str) -> str | None:
    from bisman_ops.clients.aws import error_code

    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except Exception as exc:
        if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
            return None
        raise
