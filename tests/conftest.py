"""Test settings shared by the whole suite."""

from __future__ import annotations

import json
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

from bisman_sandbox import launcher  # noqa: E402
from bisman_sandbox.airflow_local import AirflowClient  # noqa: E402
from bisman_sandbox.context import SandboxContext  # noqa: E402

# One rehearsal for the session, shared by the e2e and browser tiers (a fixture defined in each
# tier's conftest would run twice).
from tests.e2e.rehearsal import rehearsal, rollout  # noqa: E402, F401


@pytest.fixture(scope="session")
def sandbox() -> SandboxContext:
    ctx = SandboxContext.from_env()
    launcher.up(ctx)  # cheap when scripts/test.sh already brought it up
    return ctx


LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


def session_airflow_env(sandbox: SandboxContext) -> dict[str, str]:
    """What the session's Airflow runs with besides the launcher's configuration: the sandbox's
    connections, the Celery test's probe DAG in a bundle of its own, and a lost worker noticed in a
    minute (Airflow's defaults: 5 min for a task without heartbeat, 10 for one left queued)."""
    bundles = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {}},
               {"name": "test-dags", "classpath": LOCAL_BUNDLE,
                "kwargs": {"path": str(ROOT / "tests" / "e2e" / "celery_dags"), "refresh_interval": 5}}]
    return {
        **launcher.airflow_connection_env(sandbox),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        # The fail points the restore drills arm (tests/e2e/restores.py); none unless a test arms one.
        "BISMAN_FAILPOINTS_FILE": str(sandbox.path("failpoints.json")),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
        # A message the lost worker had reserved but not started leaves its task queued.
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
    }


@pytest.fixture(scope="session")
def airflow(sandbox) -> AirflowClient:
    """A running Airflow (api-server, scheduler, dag-processor, triggerer on its PostgreSQL metadata
    database; with ``BISMAN_AIRFLOW_EXECUTOR=CeleryExecutor``, as scripts/test.sh sets it, two Celery
    workers and their broker) whose connections point at the sandbox, shared by the e2e and UI tiers,
    stopped at the end."""
    af = AirflowLocal.from_env()
    af.up(extra_env=session_airflow_env(sandbox))
    yield af.client()
    af.down()


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium under Playwright, for the browser tier and the e2e rehearsal's approval."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: scripts/setup.sh installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.hookimpl(tryfirst=True)  # marked before `-m` deselects
def pytest_collection_modifyitems(config, items):
    """Whole DAG runs under Airflow last, the browser tier after them: the quick logic and service
    tests fail first, and the runs' lasting effects on the shared sandbox (an ended trial, a restored
    database) come after."""
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
        if "/tests/ui/" in str(item.path):
            item.add_marker(pytest.mark.ui)
            item.add_marker(pytest.mark.e2e)  # it needs the whole Airflow too: not the fast tier
    # The browser walkthrough last of all: it drives the same Airflow and sandbox the e2e runs use.
    items.sort(key=lambda item: ("/tests/e2e/" in str(item.path)) + 2 * ("/tests/ui/" in str(item.path)))


@pytest.fixture
def service_on_revision_2(sandbox):
    """The application's ECS service on task definition revision 2 before and after the test (an
    application rollback to ``previous`` then has somewhere to go)."""
    from bisman_sandbox import aws

    names, ecs = aws.names(), aws.client(sandbox, "ecs")
    arn = ecs.describe_task_definition(taskDefinition=f"{names.app_task_family}:2")["taskDefinition"][
        "taskDefinitionArn"]

    def put_back():
        ecs.update_service(cluster=names.ecs_cluster_name, service=names.ecs_service_name, taskDefinition=arn,
                           desiredCount=aws.APP_DESIRED_COUNT)

    put_back()
    yield
    put_back()
