"""Answering an approval (a HITL task) through the REST API as the UI does, robust to an Airflow race.

Airflow 3.3.2 races an answer given before the scheduler has seen the pausing worker exit: the late
executor event kills the resumed try. So the answer is given once the scheduler logged that event,
and counts once the approval has finished; asked again, it is answered again. A person never answers
that fast; a test must wait for the condition, not a fixed time."""

from __future__ import annotations

import os
from pathlib import Path

from bisman_sandbox.process import wait_until


def task_instance(af, dag_id: str, run_id: str, task_id: str) -> dict:
    return af._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")


def answer(af, dag_id: str, run_id: str, task_id: str, option: str, timeout: float = 600) -> dict:
    """Answer ``task_id`` with ``option`` once it waits for input; returns what it asked."""
    details = None
    for _ in range(3):
        af.wait_for_task_state(dag_id, run_id, task_id, ("awaiting_input",), timeout=timeout)
        asked = task_instance(af, dag_id, run_id, task_id)["try_number"]
        details = details or af.hitl_details(dag_id, run_id, task_id)
        wait_until(lambda asked=asked: pause_seen_by_scheduler(dag_id, run_id, task_id, asked), timeout=300,
                   what=f"the scheduler to see {task_id} pause", interval=1)
        af.answer_approval(dag_id, run_id, task_id, option)
        wait_until(lambda asked=asked: answer_taken(af, dag_id, run_id, task_id, asked), timeout=300,
                   what=f"{task_id} to take the answer {option}", interval=1)
        if task_instance(af, dag_id, run_id, task_id)["state"] in ("success", "failed"):
            return details
    raise AssertionError(f"{task_id} asked three times")


def answer_taken(af, dag_id: str, run_id: str, task_id: str, asked: int) -> bool:
    """The answer to try ``asked`` counted (the task finished), or was lost and it asks again."""
    ti = task_instance(af, dag_id, run_id, task_id)
    asked_again = ti["state"] == "awaiting_input" and ti["try_number"] > asked
    return ti["state"] in ("success", "failed") or asked_again


def pause_seen_by_scheduler(dag_id: str, run_id: str, task_id: str, try_number: int) -> bool:
    """The scheduler has processed the executor's event of the worker that paused for the answer."""
    log = Path(os.environ["AIRFLOW_HOME"]) / "processes" / "logs" / "scheduler.log"
    event = (f"Received executor event with state success for task instance TaskInstanceKey("
             f"dag_id='{dag_id}', task_id='{task_id}', run_id='{run_id}', try_number={try_number},")
    return log.exists() and event in log.read_text(errors="replace")
