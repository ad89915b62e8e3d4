"""Moved to ``bisman_ops.change.lock``; this name stays until every caller imports from there."""

from bisman_ops.change.lock import *  # noqa: F403
from bisman_ops.change.lock import (  # noqa: F401
    DEFAULT_LEASE_SECONDS,
    KEY_PREFIX,
    ChangeLockError,
    ChangeLockHeld,
    ChangeLockLost,
    LockHolder,
    acquire,
    current,
    lock_id,
    owner_for,
    release,
    renew,
)
