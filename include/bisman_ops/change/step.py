"""The task wrapper every change DAG's tasks run in.

``@step`` makes a function an Airflow task (``@task``) that, around the function:

- renews the run's change-lock lease first (``lease=True``, the default; the fencing check: a run
  that lost the lock stops before changing anything), and keeps renewing it while the function
  runs (``lock.LeaseKeeper``): a long step never outlives its lease, and one that lost the lock
  meanwhile fails. Tasks before the lock is taken say ``lease=False``;
- records what it measured (the return value, or ``Result.measured``), or its failure, under the
  XCom key ``change_record``: the run report is assembled from these records;
- turns a ``CheckFailed`` into a failure that is not retried, carrying what was checked, what was
  seen, what was expected and what to do next. Any other exception is recorded and retried as
  the task's ``retries`` say (a timeout or a dropped connection may well pass next time).

``@step.sensor(poke_interval=..., timeout=..., timeout_param=...)`` does the same for a wait: the
function returns a ``Poke`` each look; a reschedule-mode sensor gives the worker slot back between
looks, and a wait past its timeout (the DAG param ``timeout_param`` when set) fails as a
``CheckFailed`` naming the last thing seen, not Airflow's generic "sensor has timed out".

The decorated function's own code stays plain: it takes values (XComArgs in the DAG file) and
returns values; ``context()`` gives the Airflow context where a task needs the run's identity.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bisman_ops.change import failpoints
from bisman_ops.change.errors import CheckFailed
from bisman_ops.change.redact import redact, redact_text
from bisman_ops.params import MAX_WAIT_SECONDS  # the longest wait a form allows

if TYPE_CHECKING:
    from bisman_ops.change.report import Section

log = logging.getLogger(__name__)

RECORD_KEY = "change_record"
SENSOR_CEILING = timedelta(hours=24)  # Airflow's own limit; the param-driven timeout comes first
SENSOR_MARGIN = timedelta(minutes=10)
POKE_TIMEOUT = timedelta(minutes=5)  # one look of a wait
# Airflow 3.3 fails a rescheduled sensor whose next look is queued before the scheduler has taken
# the previous look's executor event (seen 5 s late on this loaded 2-core machine): looks are at
# least this far apart.
RESCHEDULE_FLOOR = timedelta(seconds=15)
MAX_MESSAGE_CHARS = 3000


@dataclass
class Result:
    """What a step returns when its XCom value (for the next tasks) differs from what the report
    shows, or when it adds a report section or an outcome hint (``no_change``)."""

    value: Any = None
    measured: dict[str, Any] | None = None
    sections: list[Section] = field(default_factory=list)
    hint: str | None = None


@dataclass
class Poke:
    """One look of a wait: done or not, what was seen, and (not done) what it is waiting for."""

    done: bool
    measured: dict[str, Any] = field(default_factory=dict)
    waiting_for: str = ""
    value: Any = None  # the XCom value when done (default: measured)


def context() -> Any:
    """The running task's Airflow context."""
    from airflow.sdk import get_current_context

    return get_current_context()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def record(ti: Any, **entry: Any) -> None:
    """Keep ``entry`` (measured, failure, sections, hint, answer) for the run report, redacted."""
    try:
        ti.xcom_push(key=RECORD_KEY, value=redact(_jsonable(entry)))
    except Exception as exc:  # the task's own outcome matters more than its record
        log.warning("could not record %s for the report: %s", getattr(ti, "task_id", "?"),
                    type(exc).__name__)


def failure_entry(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, CheckFailed):
        entry = exc.as_dict()
    else:
        entry = {"message": f"{type(exc).__name__}: {exc}", "measured": {}}
    entry["message"] = redact_text(str(entry["message"]))[:MAX_MESSAGE_CHARS]
    return entry


def _fail(ti: Any, exc: CheckFailed, started: float, changes: bool = False) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    record(ti, failure=failure_entry(exc), changed=changes, seconds=round(time.monotonic() - started, 3))
    measured = f" Measured: {json.dumps(redact(exc.measured), default=str)}" if exc.measured else ""
    raise AirflowFailException(redact_text(exc.message()) + measured[:MAX_MESSAGE_CHARS]) from None


def _fence(lease: bool, ctx: Any) -> None:
    if lease:
        from bisman_ops.change import lock

        lock.fence(ctx)


def _leased(lease: bool, ctx: Any, fn: Callable, args: tuple, kwargs: dict) -> Any:
    """``fn`` with the lease renewed while it runs; a lease lost meanwhile fails the step."""
    if not lease:
        return fn(*args, **kwargs)
    from bisman_ops.change import lock

    with lock.keep_lease(ctx) as keeper:
        out = fn(*args, **kwargs)
    keeper.check()
    return out


def _run(fn: Callable, lease: bool, changes: bool, args: tuple, kwargs: dict) -> Any:
    ctx = context()
    ti = ctx["ti"]
    started = time.monotonic()
    try:
        _fence(lease, ctx)
        out = _leased(lease, ctx, fn, args, kwargs)
        if changes:
            failpoints.after_change(ti)
    except CheckFailed as exc:
        _fail(ti, exc, started, changes)
    except Exception as exc:  # a changing step that failed may have changed part of what it does
        record(ti, failure=failure_entry(exc), changed=changes, seconds=round(time.monotonic() - started, 3))
        raise
    result = out if isinstance(out, Result) else Result(value=out)
    measured = result.measured if result.measured is not None else (
        result.value if isinstance(result.value, dict) else {"value": result.value})
    record(ti, measured=measured, sections=[s.as_dict() for s in result.sections], hint=result.hint,
           changed=changes, seconds=round(time.monotonic() - started, 3))
    log.info("%s measured: %s", ti.task_id, json.dumps(redact(_jsonable(measured)))[:2000])
    return result.value


def _poke(fn: Callable, lease: bool, timeout_param: str | None, timeout: timedelta,
          args: tuple, kwargs: dict) -> Any:
    from airflow.sdk import PokeReturnValue, timezone

    ctx = context()
    ti = ctx["ti"]
    started = time.monotonic()
    try:
        _fence(lease, ctx)
        poke = fn(*args, **kwargs)
        if poke.done:
            record(ti, measured=poke.measured)
            return PokeReturnValue(is_done=True,
                                   xcom_value=poke.value if poke.value is not None else poke.measured)
        limit = float((ctx["params"].get(timeout_param) if timeout_param else None)
                      or timeout.total_seconds())
        first = ti.get_first_reschedule_date(ctx)
        waited = (timezone.utcnow() - first).total_seconds() if first else 0.0
        if waited >= limit:
            raise CheckFailed(f"{ti.task_id} timed out after {limit:.0f} s", poke.waiting_for,
                              "the condition met within the timeout",
                              "Fix the cause, then clear this task to wait again", poke.measured)
    except CheckFailed as exc:
        _fail(ti, exc, started)
    except Exception as exc:
        record(ti, failure=failure_entry(exc))
        raise
    record(ti, measured=poke.measured, waiting_for=poke.waiting_for)
    log.info("waiting: %s", redact_text(poke.waiting_for))
    return False


def step(fn: Callable | None = None, *, lease: bool = True, changes: bool = False, **task_kwargs: Any):
    """``@step`` / ``@step(lease=False, changes=True, task_id=..., trigger_rule=..., retries=...)``:
    an Airflow task running ``fn`` inside the change layer (see the module docstring).

    ``changes=True`` marks a step that changes the environment: a run that fails before any such
    step ran is reported as ``refused`` (nothing changed), not ``failed``.
    """

    def decorate(fn: Callable):
        from airflow.sdk import task

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return _run(fn, lease, changes, args, kwargs)

        return task(run, multiple_outputs=False, **task_kwargs)

    return decorate(fn) if fn is not None else decorate


def sensor(fn: Callable | None = None, *, poke_interval: timedelta = timedelta(seconds=15),
           timeout: timedelta = timedelta(minutes=30), timeout_param: str | None = None,
           lease: bool = True, **task_kwargs: Any):
    """``@step.sensor(...)``: a reschedule-mode sensor whose function returns a ``Poke``.

    ``timeout_param`` names the DAG param holding the wait in seconds (the form decides it);
    without it ``timeout`` applies.
    """

    def decorate(fn: Callable):
        from airflow.sdk import task

        @functools.wraps(fn)
        def poke(*args: Any, **kwargs: Any) -> Any:
            return _poke(fn, lease, timeout_param, timeout, args, kwargs)

        task_kwargs.setdefault("mode", "reschedule")
        rescheduled = task_kwargs["mode"] == "reschedule"
        interval = max(poke_interval, RESCHEDULE_FLOOR) if rescheduled else poke_interval
        # Airflow's own bound, a little past the longest wait the form allows: ours fails first,
        # naming what it saw; Airflow's is what a run's bound is computed from.
        longest = timedelta(seconds=MAX_WAIT_SECONDS) if timeout_param else timeout
        task_kwargs.setdefault("execution_timeout", POKE_TIMEOUT)
        return task.sensor(poke, poke_interval=interval.total_seconds(),
                           timeout=min(longest + SENSOR_MARGIN, SENSOR_CEILING).total_seconds(),
                           **task_kwargs)

    return decorate(fn) if fn is not None else decorate


def short_circuit(fn: Callable | None = None, *, lease: bool = True, **task_kwargs: Any):
    """``@step.short_circuit``: the function returns a bool; False skips the tasks directly
    downstream (and, by their trigger rules, what depends only on them) instead of naming branch
    targets by task id."""

    def decorate(fn: Callable):
        from airflow.sdk import task

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            return bool(_run(fn, lease, False, args, kwargs))

        task_kwargs.setdefault("ignore_downstream_trigger_rules", False)
        return task.short_circuit(run, **task_kwargs)

    return decorate(fn) if fn is not None else decorate


step.sensor = sensor  # type: ignore[attr-defined]
step.short_circuit = short_circuit  # type: ignore[attr-defined]

