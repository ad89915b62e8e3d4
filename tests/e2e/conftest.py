"""End-to-end tests: whole DAG runs under the session's Airflow (the `sandbox` and `airflow` fixtures
of tests/conftest.py), triggered and answered through the REST API as the UI does."""
