"""The product never reaches the sandbox: no module of include/bisman_ops or dags/ imports
bisman_sandbox, statically or at import time, and none carries an emulator switch."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = (ROOT / "include" / "bisman_ops", ROOT / "dags")
SANDBOX = "bisman_sandbox"
# Environment switches that made product code behave differently under the emulators (issue 9 §3).
EMULATOR_SWITCHES = (
    "BISMAN_ECS_TASKS_LISTED",
    "BISMAN_ROLLBACK_DB_ENDPOINT_OVERRIDE",
    "BISMAN_PGBOUNCER_INI",
)


def product_files() -> list[Path]:
    return sorted(p for d in PRODUCT_DIRS for p in d.rglob("*.py") if "__pycache__" not in p.parts)


def sandbox_imports(path: Path) -> list[str]:
    """Every import of the sandbox package in ``path``, at any depth (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        else:
            continue
        found += [
            f"{path.relative_to(ROOT)}:{node.lineno} {n}"
            for n in names
            if n == SANDBOX or n.startswith(SANDBOX + ".")
        ]
    return found


def test_the_scan_finds_a_sandbox_import_where_there_is_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from bisman_sandbox import postgres\n    import importlib\n"
        "    importlib.import_module('bisman_sandbox.aws')\n"
    )
    good = tmp_path / "good.py"
    good.write_text("import bisman_sandboxes_are_fine_elsewhere\nfrom bisman_ops import config\n")
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert len(sandbox_imports(bad)) == 2
        assert sandbox_imports(good) == []
    finally:
        ROOT = root


def test_no_product_module_imports_the_sandbox():
    assert [hit for path in product_files() for hit in sandbox_imports(path)] == []


def test_importing_every_product_module_loads_no_sandbox_module():
    """A fresh interpreter imports every product module and DAG file; sys.modules then holds no
    bisman_sandbox module (an import hidden behind a function is covered by the scan above)."""
    modules = [
        ".".join(p.relative_to(ROOT / "include").with_suffix("").parts).removesuffix(".__init__")
        for p in product_files()
        if p.is_relative_to(ROOT / "include")
    ]
    dag_files = [str(p) for p in product_files() if p.is_relative_to(ROOT / "dags")]
    code = (
        "import importlib, json, runpy, sys\n"
        f"for m in {modules!r}:\n    importlib.import_module(m)\n"
        f"for f in {dag_files!r}:\n    runpy.run_path(f)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == {SANDBOX!r})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BISMAN_IMPL_")}
    env["PYTHONPATH"] = str(ROOT / "include")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("switch", EMULATOR_SWITCHES)
def test_no_product_module_carries_an_emulator_switch(switch):
    assert [
        str(p.relative_to(ROOT)) for p in product_files() if switch in p.read_text(encoding="utf-8")
    ] == []
