"""The launcher: the whole sandbox up, down and up again in a private instance (own ports and state
folder), leaving no stray process or port, and its Terraform working tree usable by real Terraform."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from bisman_sandbox import launcher
from bisman_sandbox.context import SandboxContext
from bisman_sandbox.process import pid_alive, port_open, read_pid

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def private_ctx():
    # Inside the suite's own state folder, not /tmp/pytest-of-root (mode 700): the postgres user
    # must be able to enter it.
    state_dir = SandboxContext.from_env().state_dir / "launcher-test"
    shutil.rmtree(state_dir, ignore_errors=True)
    ctx = SandboxContext.from_env({"BISMAN_SANDBOX_DIR": str(state_dir),
                                   "BISMAN_SANDBOX_PORT_OFFSET": "1500"})
    yield ctx
    launcher.down(ctx)
    shutil.rmtree(state_dir, ignore_errors=True)


def _recorded_pids(ctx: SandboxContext) -> dict[str, int]:
    pids = {}
    for f in (ctx.state_dir / "pids").glob("*.pid"):
        pid = read_pid(ctx, f.stem)
        if pid is not None:
            pids[f.stem] = pid
    return pids


def _listening_beyond_loopback(port: int) -> bool:
    """Whether something answers on this port on a non-loopback address of this machine."""
    try:
        addr = socket.gethostbyname(socket.gethostname())
    except OSError:
        return False
    if addr.startswith("127."):
        return False
    return port_open(port, host=addr)


def test_up_down_up_leaves_no_stray_process_or_port(private_ctx):
    ctx = private_ctx
    launcher.up(ctx, out=open(os.devnull, "w"))  # noqa: SIM115
    assert all(launcher.status(ctx).values()), launcher.status(ctx)
    first = _recorded_pids(ctx)
    assert len(first) >= 9, first  # every server process, each by its own pid file

    # Twice is fine: nothing restarted.
    launcher.up(ctx, out=open(os.devnull, "w"))  # noqa: SIM115
    assert {k: v for k, v in _recorded_pids(ctx).items() if k in first} == first

    for port in ctx.ports.values():
        assert port_open(port), f"port {port} not listening"
        assert not _listening_beyond_loopback(port), f"port {port} reachable beyond 127.0.0.1"

    launcher.down(ctx)
    for name, pid in first.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) still running after down"
    still_open = [p for p in ctx.ports.values() if port_open(p)]
    assert still_open == []

    launcher.up(ctx, out=open(os.devnull, "w"))  # noqa: SIM115
    assert all(launcher.status(ctx).values())


def test_connections_cover_every_service_the_dags_use(private_ctx):
    from bisman_ops import config

    conns = launcher.connections(private_ctx)
    wanted = {value for name, value in vars(config).items() if name.endswith("_CONN_ID")}
    assert wanted <= set(conns), wanted - set(conns)
    env = launcher.airflow_connection_env(private_ctx)
    aws = json.loads(env["AIRFLOW_CONN_AWS_DEFAULT"])
    assert aws["extra"]["endpoint_url"].startswith("http://127.0.0.1:")


def test_terraform_workspace_has_history_and_shares_state_with_a_clean_checkout(private_ctx, tmp_path):
    from bisman_ops import terraform
    from bisman_sandbox import aws
    from bisman_sandbox import terraform_workspace as tw

    repo = tw.workspace_dir(private_ctx)
    log = subprocess.run(["git", "log", "--format=%s"], cwd=repo, capture_output=True, text=True, check=True)
    assert len(log.stdout.splitlines()) >= 2
    # Real Terraform on the private sandbox's moto: state in its S3, lock in its DynamoDB.
    n = aws.names()
    backend = terraform.backend_config(n.project_name, n.environment, n.state_bucket, n.lock_table,
                                       "us-east-1", endpoint_url=aws.endpoint_url(private_ctx))
    env = {**terraform.aws_environment(aws.FAKE_ACCESS_KEY_ID, aws.FAKE_SECRET_ACCESS_KEY, None, "us-east-1"),
           **tw.settings(private_ctx)}  # this machine's inputs, as the DAGs get them
    tfvars = {"environment": "staging", "app_image": "bisman-erp:sandbox-2",
              "domain_name": "api.staging.bisman.test"}
    live = terraform.Terraform(workdir=repo, env=env, timeout=120)
    live.init(backend)
    live.write_tfvars(tfvars)
    assert live.plan(repo / "tfplan") is True
    live.apply(repo / "tfplan")

    # A clean checkout of the same revision, initialised with the same backend, has nothing to do.
    clean = tmp_path / "checkout"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(clean), "HEAD"], cwd=repo, check=True)
    checkout = terraform.Terraform(workdir=clean, env=env, timeout=120)
    checkout.init(backend)
    checkout.write_tfvars(tfvars)
    assert checkout.plan(clean / "tfplan") is False
    assert checkout.outputs()["api_base_url"] == f"http://127.0.0.1:{private_ctx.port('app')}"


def test_a_state_folder_survives_a_change_of_ports(private_ctx):
    from bisman_sandbox import postgres

    launcher.down(private_ctx)
    moved = SandboxContext(state_dir=private_ctx.state_dir,
                           ports={name: port + 7 for name, port in private_ctx.ports.items()})
    try:
        postgres.up(moved)  # the replica streams from the primary's new port
        assert postgres.healthy(moved)
        assert postgres.replica_lag_seconds(moved) < 5
    finally:
        postgres.down(moved)
    launcher.up(private_ctx, out=open(os.devnull, "w"))  # noqa: SIM115
    assert all(launcher.status(private_ctx).values())
