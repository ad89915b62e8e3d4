"""The application's settings, read from environment variables only (12-factor, as in ECS)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


class SettingsError(RuntimeError):
    """A required environment variable is missing or malformed."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    database_url: str
    database_url_replica: str
    redis_sentinels: tuple[tuple[str, int], ...]
    redis_master_name: str
    redis_password: str | None
    redis_sentinel_password: str | None
    jwt_secret: str
    stripe_webhook_secret: str
    aws_endpoint_url: str | None
    aws_region: str
    app_log_group: str | None
    routing_log_file: str | None
    metrics_dir: str | None
    fault_file: str | None = None  # while this file exists, API requests answer 500 (alert drills)
    latency_file: str | None = None  # while it exists, every request waits the milliseconds it holds
    usage_meter_enabled: bool = True
    quota_enforcement_enabled: bool = True
    db_connect_timeout: int = 2
    db_query_timeout: float = 3.0
    redis_timeout: float = 0.5

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        missing = [
            name
            for name in ("DATABASE_URL", "DATABASE_URL_REPLICA", "REDIS_SENTINELS", "REDIS_MASTER_NAME",
                         "JWT_SECRET", "STRIPE_WEBHOOK_SECRET")
            if not env.get(name)
        ]
        if missing:
            raise SettingsError(f"missing environment variables: {', '.join(missing)}")
        return cls(
            database_url=env["DATABASE_URL"],
            database_url_replica=env["DATABASE_URL_REPLICA"],
            redis_sentinels=parse_sentinels(env["REDIS_SENTINELS"]),
            redis_master_name=env["REDIS_MASTER_NAME"],
            redis_password=env.get("REDIS_PASSWORD") or None,
            redis_sentinel_password=env.get("REDIS_SENTINEL_PASSWORD") or None,
            jwt_secret=env["JWT_SECRET"],
            stripe_webhook_secret=env["STRIPE_WEBHOOK_SECRET"],
            aws_endpoint_url=env.get("AWS_ENDPOINT_URL") or None,
            aws_region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1",
            app_log_group=env.get("APP_LOG_GROUP") or None,
            routing_log_file=env.get("ROUTING_LOG_FILE") or None,
            metrics_dir=env.get("METRICS_DIR") or None,
            fault_file=env.get("FAULT_FILE") or None,
            latency_file=env.get("LATENCY_FILE") or None,
            usage_meter_enabled=_flag(env.get("USAGE_METER_ENABLED"), True),
            quota_enforcement_enabled=_flag(env.get("QUOTA_ENFORCEMENT_ENABLED"), True),
            db_connect_timeout=int(env.get("DB_CONNECT_TIMEOUT_SECONDS", "2")),
            db_query_timeout=float(env.get("DB_QUERY_TIMEOUT_SECONDS", "3")),
            redis_timeout=float(env.get("REDIS_TIMEOUT_SECONDS", "0.5")),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in a response or a log line."""
        values = [self.jwt_secret, self.stripe_webhook_secret, self.redis_password or "",
                  self.redis_sentinel_password or ""]
        for url in (self.database_url, self.database_url_replica):
            values.append(_url_password(url))
        return tuple(v for v in values if v)


def parse_sentinels(value: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` into pairs."""
    pairs = []
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(f"REDIS_SENTINELS item {item!r} is not host:port")
        pairs.append((host, int(port)))
    return tuple(pairs)


def _url_password(url: str) -> str:
    password = urlsplit(url).password
    return unquote(password) if password else ""


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
