"""What the rollout DAG's shape tests share: which tasks a failed (or skipped) task leaves unrun,
worked out from the DAG's edges and trigger rules the way the scheduler decides them."""

from __future__ import annotations

from bisman_ops.change.report import in_run_order

# A failed or upstream-failed upstream makes a task with one of these rules upstream_failed.
PROPAGATES_FAILURE = ("all_success", "none_failed", "none_failed_min_one_success")


def unrun(dag, failed: tuple[str, ...] = (), skipped: tuple[str, ...] = ()) -> dict[str, str]:
    """``{task_id: "failed" | "upstream_failed" | "skipped"}``: every task that does not run when
    the tasks ``failed`` fail and the tasks ``skipped`` are skipped (a short-circuit skips its
    direct downstream tasks). A teardown (``all_done_setup_success``) whose setups did not succeed
    does not run: skipped when they were all skipped, upstream_failed otherwise, as Airflow 3.3
    decides it. Any other rule not in ``PROPAGATES_FAILURE`` runs whatever its upstream did."""
    state = {**{t: "failed" for t in failed}, **{t: "skipped" for t in skipped}}
    for t in in_run_order(list(dag.tasks)):
        if t.task_id in state:
            continue
        ups = [state.get(u) for u in t.upstream_task_ids]
        rule = str(getattr(t.trigger_rule, "value", t.trigger_rule))
        if rule in PROPAGATES_FAILURE and {"failed", "upstream_failed"} & set(ups):
            state[t.task_id] = "upstream_failed"
        elif rule == "all_success" and "skipped" in ups:
            state[t.task_id] = "skipped"
        elif rule == "none_failed_min_one_success" and ups and all(ups):
            state[t.task_id] = "skipped"  # every upstream skipped: none succeeded
        elif rule == "all_done_setup_success":
            setups = [u for u in t.upstream_task_ids if dag.task_dict[u].is_setup]
            if setups and all(u in state for u in setups):  # no setup succeeded
                skipped_all = all(state[u] == "skipped" for u in setups)
                state[t.task_id] = "skipped" if skipped_all else "upstream_failed"
    return state
