"""The run report of a change DAG (the rollout and the rollbacks) as a tab of the DAG run in the
Airflow UI: "Run report". The page and its API live in ``bisman_ops.report_page``."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from bisman_ops import report_page

# The UI fills in the run; relative, as the UI may be served under a path.
HREF = f"{report_page.URL_PREFIX.lstrip('/')}/dags/{{DAG_ID}}/runs/{{RUN_ID}}"


class BismanRunReports(AirflowPlugin):
    name = "bisman_run_reports"
    fastapi_apps = [{"app": report_page.LazyApp(), "url_prefix": report_page.URL_PREFIX,
                     "name": "BISMAN run reports"}]
    external_views = [{"name": "Run report", "href": HREF, "destination": "dag_run",
                       "url_route": "run-report"}]
