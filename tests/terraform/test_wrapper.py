"""The Terraform wrapper (bisman_ops.terraform) driving real Terraform 1.15 on the sandbox's
configuration, with its state in moto's S3 and its lock in moto's DynamoDB."""

from __future__ import annotations

import json
import os
import pwd
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bisman_ops import terraform
from bisman_ops.naming import ResourceNames
from bisman_ops.terraform import Terraform, TerraformError, check_outputs, summarize_plan
from bisman_sandbox import aws, terraform_workspace
from tests.terraform import helpers

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def workdir(tmp_path):
    terraform_workspace.write_config(tmp_path, desired_count=2)
    return tmp_path


def make_tf(ctx, project, workdir, key_suffix: str) -> Terraform:
    """Terraform in ``workdir`` on a state of its own in the test project's staging bucket."""
    n = ResourceNames(project, "staging")
    backend = terraform.backend_config(project, "staging", n.state_bucket, n.lock_table, "us-east-1",
                                       endpoint_url=aws.endpoint_url(ctx))
    backend["key"] = f"{project}/wrapper/{key_suffix}.tfstate"
    conn = aws.connections(ctx)["aws_default"]
    env = terraform.aws_environment(conn["login"], conn["password"], None, "us-east-1")
    tf = Terraform(workdir=workdir, env=env, timeout=180)
    tf.init(backend)
    tf.write_tfvars(helpers.tfvars(project, "staging"))
    tf.backend = backend  # for the tests' own look at the lock table
    return tf


def edit(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def test_default_binary_is_the_projects_command():
    tf = Terraform()
    assert tf.command() == [sys.executable, "-m", "bisman_ops.terraform_cli"]
    assert terraform.version_at_least(tf.version(), "1.15.0")


def test_a_sites_own_terraform_named_by_the_environment_is_the_one_run(tmp_path, monkeypatch):
    marker = tmp_path / "site-terraform-ran"
    site = tmp_path / "site-terraform"  # a site's terraform: here the sandbox's, behind a wrapper
    site.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(marker))}\n"
                    f'exec {shlex.quote(str(terraform_workspace.TERRAFORM_BIN))} "$@"\n')
    site.chmod(0o755)
    monkeypatch.setenv(terraform.BINARY_ENV, str(site))
    tf = Terraform(workdir=tmp_path)
    assert tf.command() == [str(site)]
    assert not marker.exists()
    assert tf.version().startswith("1.15.")
    assert marker.exists()  # the version came through the site's command


def test_plan_exit_codes_then_apply_gives_contract_outputs_pointing_at_the_sandbox(
    ctx, project, tf_env, workdir, request
):
    tf = make_tf(ctx, project, workdir, request.node.name)
    assert tf.plan("first.tfplan") is True  # -detailed-exitcode 2
    summary = summarize_plan(tf.show_json(workdir / "first.tfplan"))
    assert summary.adds == 14 and summary.destroys == summary.replaces == 0 and not summary.stateful_at_risk
    tf.apply("first.tfplan")
    outputs = tf.outputs()
    assert check_outputs(outputs) == []
    assert outputs["pgbouncer_port"] == ctx.ports["pgbouncer"]
    assert outputs["api_base_url"] == f"http://127.0.0.1:{ctx.ports['app']}"
    assert outputs["alb_arn"] == aws.seeded(ctx, "staging").alb_arn
    seeded = aws.seeded(ctx, "staging")
    assert outputs["db_client_security_group_ids"] == [seeded.app_security_group_id,
                                                        seeded.pgbouncer_security_group_id]
    assert outputs["db_instance_identifier"] == f"{project}-staging-db"
    assert tf.plan("again.tfplan") is False  # -detailed-exitcode 0: nothing to approve or apply


def test_a_commit_that_replaces_the_database_and_redis_shows_them_first(
    ctx, project, tf_env, workdir, request
):
    tf = make_tf(ctx, project, workdir, request.node.name)
    tf.plan("base.tfplan")
    tf.apply("base.tfplan")
    main = workdir / "main.tf"
    edit(main, 'engine                  = "postgres"', 'engine                  = "aurora-postgresql"')
    edit(main, 'engine            = "postgres"', 'engine            = "aurora-postgresql"')
    edit(main, "= 6379\n    security", "= 6380\n    security")  # Redis's port: input and trigger
    edit(main, "= 6379\n  }", "= 6380\n  }")
    edit(main, "app_desired_count = 2", "app_desired_count = 4")
    assert tf.plan("change.tfplan") is True
    summary = summarize_plan(tf.show_json(workdir / "change.tfplan"))
    at_risk = [(c.address, c.type, c.action) for c in summary.stateful_at_risk]
    assert at_risk == [("terraform_data.db_primary", "aws_db_instance", "replace"),
                       ("terraform_data.redis", "aws_elasticache_replication_group", "replace")]
    first_two = [c.address for c in summary.resource_changes[:2]]
    assert first_two == ["terraform_data.db_primary", "terraform_data.redis"]
    assert summary.resource_changes[0].reason == "an argument that forces replacement changed"
    changes = [(c.address, c.action) for c in summary.resource_changes]
    assert ("terraform_data.app_service", "update") in changes
    assert summary.headline().startswith("DATA AT RISK: 2 stateful resource(s)")
    markdown = summary.to_markdown()
    assert markdown.startswith("## ⚠ Stateful resources destroyed or replaced")
    assert markdown.index("terraform_data.db_primary") < markdown.index("terraform_data.app_service")


def test_bad_variables_fail_at_plan_with_terraforms_own_message(ctx, project, tf_env, workdir, request):
    tf = make_tf(ctx, project, workdir, request.node.name)
    tf.write_tfvars({**helpers.tfvars(project, "staging"), "environment": "dev", "app_image": "bisman-erp"})
    with pytest.raises(TerraformError) as excinfo:
        tf.plan("bad.tfplan")
    message = str(excinfo.value)
    assert excinfo.value.returncode == 1
    assert "Invalid value for variable" in message
    assert "environment must be staging or prod." in message
    assert "app_image must name an image with a tag or digest" in message


def test_state_locked_by_another_terraform_fails_with_its_lock_id(ctx, project, tf_env, workdir, request):
    tf = make_tf(ctx, project, workdir, request.node.name)
    tf.plan("base.tfplan")
    tf.apply("base.tfplan")
    ddb = aws.client(ctx, "dynamodb")
    lock_path = f"{tf.backend['bucket']}/{tf.backend['key']}"
    # Another Terraform, interactive: it holds the state lock while it waits for its "yes".
    holder = subprocess.Popen(
        [*tf.command(), "apply", "-no-color", "-var", "app_image=bisman-erp:other-1"], cwd=workdir,
        env=tf._child_env() | {"TF_INPUT": "1"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )
    try:
        holder_id = None
        deadline = time.monotonic() + 60
        while holder_id is None and time.monotonic() < deadline and holder.poll() is None:
            item = ddb.get_item(TableName=tf.backend["dynamodb_table"], Key={"LockID": {"S": lock_path}},
                                ConsistentRead=True).get("Item")
            holder_id = json.loads(item["Info"]["S"])["ID"] if item else None
            time.sleep(0.2)
        assert holder_id, "the other Terraform never took the lock"
        with pytest.raises(TerraformError) as excinfo:
            tf.plan("blocked.tfplan")
        assert "Error acquiring the state lock" in str(excinfo.value)
        assert excinfo.value.lock_id == holder_id
        assert holder_id in str(excinfo.value)
    finally:
        said, _ = holder.communicate("no\n", timeout=60)
    assert "Apply cancelled" in said
    assert tf.plan("after.tfplan") is False  # the lock is free again and nothing changed


def test_a_lock_left_by_its_own_retried_write_is_released_and_the_command_goes_on(
    ctx, project, tf_env, workdir, request, caplog, tmp_path
):
    # What the AWS SDK leaves when it retries a lock PutItem whose first answer was lost: the
    # command's own lock (this user@host, this operation, created while it runs), which Terraform
    # then reports as held and never releases. A `terraform` that writes that lock as it starts
    # and then runs the real one reproduces it.
    tf = make_tf(ctx, project, workdir, request.node.name)
    ddb = aws.client(ctx, "dynamodb")
    table, lock_path = tf.backend["dynamodb_table"], f"{tf.backend['bucket']}/{tf.backend['key']}"
    lock_id = str(uuid.uuid4())
    own = {"ID": lock_id, "Operation": "OperationTypePlan", "Info": "", "Version": "1.15.5",
           "Path": lock_path, "Who": f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"}
    conn = aws.connections(ctx)["aws_default"]
    setup = tmp_path / "lock.json"
    setup.write_text(json.dumps({"table": table, "path": lock_path, "lock": own,
                                 "endpoint": aws.endpoint_url(ctx), "key": conn["login"],
                                 "secret": conn["password"]}))
    wrapper = tmp_path / "terraform"
    wrapper.write_text(f"""#!{sys.executable}
import json, os, sys
from datetime import UTC, datetime
import boto3
setup = json.load(open({str(setup)!r}))
if sys.argv[1] == "plan" and not os.path.exists({str(setup)!r} + ".done"):
    open({str(setup)!r} + ".done", "w").close()
    lock = dict(setup["lock"], Created=datetime.now(UTC).isoformat().replace("+00:00", "Z"))
    boto3.client("dynamodb", endpoint_url=setup["endpoint"], region_name="us-east-1",
                 aws_access_key_id=setup["key"], aws_secret_access_key=setup["secret"]).put_item(
        TableName=setup["table"],
        Item={{"LockID": {{"S": setup["path"]}}, "Info": {{"S": json.dumps(lock)}}}})
os.execv(sys.executable, [sys.executable, "-m", "bisman_ops.terraform_cli", *sys.argv[1:]])
""")
    wrapper.chmod(0o755)
    tf.binary = str(wrapper)

    with caplog.at_level("WARNING", logger="bisman_ops.terraform"):
        assert tf.plan("own.tfplan") is True
    assert f"the state lock {lock_id} it failed on is its own" in caplog.text
    assert "Item" not in ddb.get_item(TableName=table, Key={"LockID": {"S": lock_path}}, ConsistentRead=True)

    # The same lock written before the command started is someone's crash: left for a human.
    own["Created"] = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    ddb.put_item(TableName=table, Item={"LockID": {"S": lock_path}, "Info": {"S": json.dumps(own)}})
    with pytest.raises(TerraformError) as excinfo:
        tf.plan("stale.tfplan")
    assert excinfo.value.lock_id == lock_id
    assert "Item" in ddb.get_item(TableName=table, Key={"LockID": {"S": lock_path}}, ConsistentRead=True)


def test_lock_info_is_read_from_terraforms_message():
    stderr = ("Error: Error acquiring the state lock\n\nLock Info:\n  ID:        8d1c-42\n"
              "  Path:      b/k.tfstate\n  Operation: OperationTypeApply\n  Who:       ops@w1\n"
              "  Version:   1.15.5\n  Created:   2026-12-02 13:40:01.250000123 +0000 UTC\n  Info:\n")
    lock = terraform.LockInfo.parse(stderr)
    assert (lock.id, lock.operation, lock.who) == ("8d1c-42", "OperationTypeApply", "ops@w1")
    assert lock.created == pytest.approx(datetime(2026, 12, 2, 13, 40, 1, 250000, UTC).timestamp())
    assert terraform.LockInfo.parse("Error: Invalid value for variable") is None


def test_a_plan_made_stale_by_another_apply_is_refused_by_terraform(ctx, project, tf_env, workdir, request):
    tf = make_tf(ctx, project, workdir, request.node.name)
    tf.plan("first.tfplan")
    tf.plan("second.tfplan")
    tf.apply("second.tfplan")
    with pytest.raises(TerraformError) as excinfo:
        tf.apply("first.tfplan")
    assert "Saved plan is stale" in str(excinfo.value)


def test_sensitive_values_stay_out_of_summary_and_errors(ctx, project, tf_env, workdir, request, monkeypatch):
    password = "db-pass-in-plan-7f3a9c"
    monkeypatch.setenv("TF_VAR_sandbox_db_password", password)
    tf = make_tf(ctx, project, workdir, request.node.name)
    tf.plan("s.tfplan")
    plan_json = tf.show_json(workdir / "s.tfplan")
    assert password in json.dumps(plan_json)  # Terraform's JSON holds it, marked sensitive
    assert password in terraform.sensitive_values(plan_json)
    summary = summarize_plan(plan_json)
    shown = json.dumps(summary.to_dict()) + summary.to_markdown() + summary.headline()
    assert password not in shown
    assert tf.redact(f"provider said: password {password} rejected") == "provider said: password *** rejected"


def test_tfvars_file_is_private(ctx, project, tf_env, workdir, request):
    make_tf(ctx, project, workdir, request.node.name)
    path = workdir / terraform.TFVARS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert re.search(r'^environment = "staging"$', path.read_text(), re.MULTILINE)


def test_missing_binary_is_named(tmp_path):
    with pytest.raises(TerraformError, match="no Terraform binary '/nonexistent/terraform'"):
        Terraform(binary="/nonexistent/terraform", workdir=tmp_path).version()
    shutil.rmtree(tmp_path)


def test_a_command_past_its_timeout_is_interrupted_so_terraform_stops_cleanly(tmp_path):
    (tmp_path / "main.tf").write_text(
        'resource "terraform_data" "slow" {\n  input = "x"\n'
        '  provisioner "local-exec" {\n    command = "sleep 120"\n  }\n}\n')
    tf = Terraform(workdir=tmp_path, timeout=120)
    tf.init()
    tf.plan("slow.tfplan")
    tf.timeout = 5
    with pytest.raises(TerraformError) as excinfo:
        tf.apply("slow.tfplan")
    assert "stopped after 5 s (interrupted)" in str(excinfo.value)
    assert "execution halted" in excinfo.value.stderr  # Terraform's own graceful stop, not a kill
    assert not (tmp_path / ".terraform.tfstate.lock.info").exists()
