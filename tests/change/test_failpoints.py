"""The fail point that kills a changing step after its change: armed only by a file that names the
exact dag, run, task and try."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

from bisman_ops.change import failpoints

TI = SimpleNamespace(dag_id="bisman_rollout", run_id="manual__1", task_id="read_replica.replica_taken_down",
                     try_number=1)


def test_nothing_is_read_without_the_variable(tmp_path):
    assert failpoints.armed(TI, environ={}) is False
    assert failpoints.armed(TI, environ={failpoints.FILE_ENV: str(tmp_path / "missing.json")}) is False


def test_only_the_named_try_of_the_named_task_of_the_named_run_is_armed(tmp_path):
    path = tmp_path / "failpoints.json"
    path.write_text(json.dumps([{"dag_id": TI.dag_id, "run_id": TI.run_id, "task_id": TI.task_id,
                                 "try_number": 1}]))
    env = {failpoints.FILE_ENV: str(path)}
    assert failpoints.armed(TI, environ=env)
    for other in ({"try_number": 2}, {"run_id": "manual__2"}, {"task_id": "read_replica.replica_restored"}):
        assert not failpoints.armed(SimpleNamespace(**{**TI.__dict__, **other}), environ=env), other


def test_an_armed_fail_point_kills_its_process_with_sigkill(tmp_path):
    path = tmp_path / "failpoints.json"
    path.write_text(json.dumps([{**TI.__dict__}]))
    code = ("import sys; from types import SimpleNamespace; from bisman_ops.change import failpoints; "
            f"failpoints.after_change(SimpleNamespace(**{TI.__dict__!r})); print('survived')")
    done = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ,
                          failpoints.FILE_ENV: str(path)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == -9 and "survived" not in done.stdout


def test_a_point_inside_a_step_is_armed_only_where_named(tmp_path):
    path = tmp_path / "failpoints.json"
    path.write_text(json.dumps([{**TI.__dict__, "at": "paused"}]))
    env = {failpoints.FILE_ENV: str(path)}
    assert failpoints.armed(TI, environ=env, at="paused")
    assert not failpoints.armed(TI, environ=env)  # not after the change: inside, where named
    assert not failpoints.armed(TI, environ=env, at="reloaded")
