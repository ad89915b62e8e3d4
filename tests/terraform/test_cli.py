"""The project's terraform command: the embedded Terraform, its real arguments, output and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bisman_ops import terraform
from bisman_sandbox import terraform_workspace

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # HOME is the test's own directory: Terraform keeps its ~/.terraform.d there.
    return subprocess.run([sys.executable, "-m", "bisman_ops.terraform_cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "CHECKPOINT_DISABLE": "1",
                               "PYTHONPATH": str(ROOT / "include")})


def test_version_is_terraform_1_15_as_json(tmp_path):
    out = run("version", "-json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert terraform.parse_version(json.loads(out.stdout)["terraform_version"])[:2] == (1, 15)
    assert out.stderr == ""  # no ~/.terraformrc is no warning, as with the real binary


def test_unknown_command_fails_with_terraforms_message_and_exit_code(tmp_path):
    out = run("no-such-command", cwd=tmp_path)
    assert out.returncode == 1
    assert 'Terraform has no command named "no-such-command"' in out.stdout + out.stderr


def test_sandbox_configuration_validates_and_a_bare_plan_refuses_to_guess_the_backend(tmp_path):
    for src in terraform_workspace.SOURCE_DIR.glob("*.tf"):
        shutil.copy(src, tmp_path / src.name)
    assert run("init", "-backend=false", "-input=false", "-no-color", cwd=tmp_path).returncode == 0
    out = run("validate", "-no-color", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "The configuration is valid" in out.stdout
    # Nothing in the configuration names a state: without the session's -backend-config, init fails.
    shutil.rmtree(tmp_path / ".terraform", ignore_errors=True)
    bare = run("init", "-input=false", "-no-color", cwd=tmp_path)
    assert bare.returncode == 1
    assert "bucket" in (bare.stdout + bare.stderr)


def test_sandbox_shim_runs_the_same_command(tmp_path):
    shim = ROOT / "include" / "bisman_sandbox" / "bin" / "terraform"
    out = subprocess.run([str(shim), "version"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CHECKPOINT_DISABLE": "1"})
    assert out.returncode == 0 and out.stdout.startswith("Terraform v1.15.")
