"""Test settings shared by the whole suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

# A private, throw-away Airflow home unless the test script set one up.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".airflow" / "test"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

# Airflow in the test process itself (DagBag, hooks, dag.test()) uses the local Airflow's PostgreSQL
# metadata database, never a SQLite file (`scripts/test.sh` starts and migrates it first).
from bisman_sandbox.airflow_local import AirflowLocal  # noqa: E402

os.environ.update(AirflowLocal.from_env().database_environment())


import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # marked before `-m` deselects
def pytest_collection_modifyitems(config, items):
    """Whole DAG runs under Airflow last: the quick logic and service tests fail first, and the
    runs' lasting effects on the shared sandbox (an ended trial, a restored database) come after."""
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
    items.sort(key=lambda item: "/tests/e2e/" in str(item.path))
