"""promtool and amtool (Debian's prometheus and prometheus-alertmanager packages), run as child
processes with a timeout: rule files are checked and unit-tested before anything is delivered."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RULES_DIR = Path(__file__).resolve().parent / "rules"
TESTS_DIR = RULES_DIR / "tests"
TIMEOUT_S = 60


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str  # stdout and stderr
    stdout: str = ""


def _run(args: list[str], cwd: Path | None = None) -> ToolResult:
    tool = shutil.which(args[0])
    if tool is None:
        return ToolResult(False, f"{args[0]} not found on PATH (Debian: apt-get install prometheus "
                                 "prometheus-alertmanager)")
    try:
        done = subprocess.run([tool, *args[1:]], capture_output=True, text=True, timeout=TIMEOUT_S,
                              cwd=cwd, check=False)
    except subprocess.TimeoutExpired:
        return ToolResult(False, f"{args[0]} did not finish within {TIMEOUT_S} s")
    return ToolResult(done.returncode == 0, (done.stdout + done.stderr).strip(), done.stdout.strip())


def rule_files(directory: Path = RULES_DIR) -> list[Path]:
    return sorted(directory.glob("*.rules.yml"))


def test_file_for(rule_file: Path) -> Path:
    return rule_file.parent / "tests" / rule_file.name.replace(".rules.yml", ".test.yml")


def check_rules(files: list[Path]) -> ToolResult:
    """``promtool check rules``: syntax, PromQL and templates of every file."""
    return _run(["promtool", "check", "rules", *map(str, files)])


def test_rules(test_files: list[Path]) -> ToolResult:
    """``promtool test rules`` (run where the tests' relative ``rule_files`` resolve)."""
    if not test_files:
        return ToolResult(False, "no test files")
    return _run(["promtool", "test", "rules", *(p.name for p in test_files)], cwd=test_files[0].parent)


def route_receivers(config_file: Path, labels: dict[str, str]) -> ToolResult:
    """``amtool config routes test``: the receivers an alert with ``labels`` is routed to (output
    is the comma-separated receiver names)."""
    return _run(["amtool", "config", "routes", "test", f"--config.file={config_file}",
                 *(f"{k}={v}" for k, v in sorted(labels.items()))])


def validate(files: list[Path]) -> list[str]:
    """Every problem with ``files``: promtool's check, a missing tests file, failing unit tests."""
    problems = []
    checked = check_rules(files)
    if not checked.ok:
        problems.append(f"promtool check rules: {checked.output[-1500:]}")
    missing = [f.name for f in files if not test_file_for(f).exists()]
    if missing:
        problems.append(f"no promtool tests file for {', '.join(missing)} (expected tests/<name>.test.yml)")
    present = [test_file_for(f) for f in files if test_file_for(f).exists()]
    if checked.ok and present:
        tested = test_rules(present)
        if not tested.ok:
            problems.append(f"promtool test rules: {tested.output[-1500:]}")
    return problems
