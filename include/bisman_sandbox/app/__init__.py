"""A small stand-in for the BISMAN ERP API, served by gunicorn in the sandbox.

It does for real what the rollout checks: health of its database (through PgBouncer) and Redis
(through Sentinel), replica reads with fallback to the primary (logged to a file and CloudWatch),
the usage meter and quota enforcement, Stripe webhooks, Prometheus metrics. All settings come
from environment variables (``settings.py``). Gunicorn target: ``bisman_sandbox.app:create_app()``.
"""

from bisman_sandbox.app.factory import create_app

__all__ = ["create_app"]
