"""A checklist phase as a task group, and the rules every phase of a change DAG keeps.

A phase module exports one ``@phase`` function: it declares the phase's tasks and returns a
``Phase`` (its gate, the value later phases read, its restores). The wrapper makes it an Airflow
``@task_group`` named after the function and adds the edges a reader should not have to remember:

- **a failed check fails the phase**: every task of the group reaches the gate by a path that does
  not pass through a restore. A restore (a teardown) that succeeds after a failed check would
  otherwise let the gate, and every later phase, run;
- **every restore reaches the gate**: the next phase starts from an environment put back, and a
  restore that failed fails the phase.

``restore(undo, intent=..., damage=...)`` gives a restore its semantics. Airflow runs a teardown only
when one of its setups succeeded (``ALL_DONE_SETUP_SUCCESS``): with the damaging step as the setup,
a step that failed after doing its damage (an exception after the change, its worker killed) would
leave the damage in place. So the setup is ``intent``, a step that only records what is about to
change and cannot fail after it; the damaging step runs between it and the restore, and the restore
runs whenever the intent was recorded, whatever the damaging step did. A damaging step is not
retried on its own (``retries=0``): its restore runs first, and clearing it (with its downstream
tasks) runs intent, damage and restore again.

``run_in_order(first, phases, release, last)`` chains the phases of a change DAG between its first
task and its lock release, with every restore upstream of the release: the lock is given back only
once what the phases changed for their checks is put back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import chain, task_group

from bisman_ops.change.step import step


def operator_of(node: Any) -> Any:
    """The operator behind a task, an XComArg or an operator."""
    return getattr(node, "operator", node)


@dataclass
class Phase:
    """What a phase's task group hands on."""

    gate: Any  # the task the next phase waits for
    value: Any = None  # what later phases read (the settings, the Terraform outputs)
    restores: list[Any] = field(default_factory=list)
    lock: Any = None  # the change lock's acquisition (the preflight's), the release's setup
    group: Any = None  # set by @phase


@step
def _intended(what: str) -> dict:
    return {"intended": what}


def intent(what: str, *, task_id: str) -> Any:
    """A setup that records, in the report, what the next step is about to change; it changes
    nothing (after the lease check), so it cannot fail once the damage has started."""
    return _intended.override(task_id=task_id)(what)


def restore(undo: Any, *, intent: Any, damage: Any | Iterable[Any]) -> Any:
    """``undo`` as the teardown of ``intent``, with ``damage`` between them (see the module docstring)."""
    damages = [damage] if not isinstance(damage, list | tuple) else list(damage)
    for d in damages:
        operator_of(d).retries = 0
    chain(intent, damages, undo)
    return undo.as_teardown(setups=operator_of(intent))


def _reaches(start: Any, target_id: str, dag: Any, through_teardowns: bool) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for down_id in node.downstream_task_ids:
            if down_id == target_id:
                return True
            if down_id in seen:
                continue
            seen.add(down_id)
            down = dag.get_task(down_id)
            if through_teardowns or not down.is_teardown:
                todo.append(down)
    return False


def _downstream_first(tasks: list[Any]) -> list[Any]:
    """``tasks`` ordered so that each comes after every task of the list downstream of it."""
    ids = {t.task_id: t for t in tasks}
    order, done = [], set()

    def visit(t: Any) -> None:
        if t.task_id in done:
            return
        done.add(t.task_id)
        for d in t.downstream_task_ids:
            if d in ids:
                visit(ids[d])
        order.append(t)

    for t in tasks:
        visit(t)
    return order


def gate_edges(group: Any, gate: Any) -> list[tuple[str, str]]:
    """Add the edges of the two rules (module docstring) to ``group``; return those added. Tasks
    nearest the gate first, so an edge is added only where no path exists once the later tasks have
    theirs."""
    gate_op = operator_of(gate)
    dag = gate_op.dag
    added = []
    for t in _downstream_first([t for t in group.iter_tasks() if t is not gate_op]):
        if not _reaches(t, gate_op.task_id, dag, through_teardowns=t.is_teardown):
            t >> gate_op
            added.append((t.task_id, gate_op.task_id))
    return added


def phase(fn: Callable[..., Phase]) -> Callable[..., Phase]:
    """``@phase``: ``fn`` as a task group named after it, its gate edges added (module docstring)."""

    @functools.wraps(fn)
    def body(*args: Any, **kwargs: Any) -> Phase:
        out = fn(*args, **kwargs)
        if not isinstance(out, Phase):
            raise TypeError(f"phase {fn.__name__} returned {type(out).__name__}, not a Phase")
        out.group = operator_of(out.gate).task_group
        gate_edges(out.group, out.gate)
        return out

    return task_group(body)


def run_in_order(first: Any, phases: list[Phase], release: Any, last: Any) -> None:
    """``first``, the phases one after the other, the lock ``release``, then ``last``; every
    restore upstream of the release."""
    chain(first, *[p.group for p in phases], release, last)
    for p in phases:
        for r in p.restores:
            r >> release
