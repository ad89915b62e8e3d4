"""The lock files: the production image's (requirements.txt) holds what the product imports and
none of the sandbox's emulators or the test tools; those are in requirements-dev.txt."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_AND_TEST_TOOLS = ("moto", "localstripe", "aiosmtpd", "gunicorn", "flask", "pytest", "pytest-timeout",
                          "ruff")


def _names(path: Path) -> set[str]:
    """Normalised distribution names listed in a requirements file."""
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[\[=<>~!; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


# Runs in the TLS scanner's own venv (requirements-tls.txt), not in Airflow's.
SCANNER = ROOT / "include" / "bisman_ops" / "tls_scan.py"


def _imported_top_level(files: list[Path]) -> set[str]:
    found = set()
    for p in files:
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"bisman_ops", "__future__"}


# locust (the rollout's load test) depends on flask and pytest: the image holds them only through it.
ONLY_THROUGH_LOCUST = ("flask", "pytest")


def _required_by(path: Path, name: str) -> set[str]:
    """What uv's lock says ``name`` is there for (its ``# via`` lines)."""
    lines, via, inside = path.read_text().splitlines(), set(), False
    for line in lines:
        if not line.startswith(" "):
            inside = line.split("==", 1)[0].strip().lower() == name
        elif inside:
            via |= {w.strip() for w in line.strip().lstrip("#").replace("via", "").split(",") if w.strip()}
    return via


@pytest.mark.parametrize("tool", SANDBOX_AND_TEST_TOOLS)
def test_the_production_lock_holds_no_sandbox_or_test_tool(tool):
    if tool in ONLY_THROUGH_LOCUST:
        assert tool not in _names(ROOT / "requirements.in")
        assert _required_by(ROOT / "requirements.txt", tool) <= {"locust", "flask-cors", "flask-login"}
    else:
        assert tool not in _names(ROOT / "requirements.txt")
    assert tool in _names(ROOT / "requirements-dev.txt") | _names(ROOT / "requirements-dev.in")


def test_every_package_the_product_imports_is_declared_for_production():
    declared = _names(ROOT / "requirements.in")
    dists = packages_distributions()
    missing = []
    product = [f for d in (ROOT / "include" / "bisman_ops", ROOT / "dags") for f in d.rglob("*.py")]
    for module in sorted(_imported_top_level([f for f in product if f != SCANNER])):
        providers = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not providers & declared and not (module == "airflow" and "apache-airflow" in declared):
            missing.append(f"{module} (from {', '.join(sorted(providers)) or 'no installed distribution'})")
    assert missing == []


def test_the_tls_scanner_imports_only_what_its_own_lock_holds():
    locked = _names(ROOT / "requirements-tls.txt")
    assert "sslyze" in _names(ROOT / "requirements-tls.in")
    assert _imported_top_level([SCANNER]) <= locked, locked
