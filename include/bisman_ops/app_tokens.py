"""Bearer tokens of the BISMAN ERP API: HS256 JWTs signed with the application's JWT secret.

The DAGs mint them with the secret from Secrets Manager (an admin token for the admin endpoints,
a tenant token to probe a tenant's quota); the application verifies them. Claims: ``sub``,
``role`` ("tenant" or "admin"), ``tenant_id`` (tenant tokens only), ``iat``, ``exp``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

ALGORITHM = "HS256"
ROLES = ("tenant", "admin")
DEFAULT_TTL_SECONDS = 900


class InvalidToken(ValueError):
    """A bearer token that is malformed, expired, badly signed or carries unusable claims."""


@dataclass(frozen=True)
class TokenClaims:
    role: str
    tenant_id: int | None
    subject: str
    expires_at: int


def mint(
    secret: str,
    *,
    tenant_id: int | None = None,
    role: str = "tenant",
    ttl: int = DEFAULT_TTL_SECONDS,
    subject: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token for ``role``; a tenant token must name its ``tenant_id``. The token (and the
    signing secret) go to Airflow's secret masker before it is returned."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role == "tenant" and tenant_id is None:
        raise ValueError("a tenant token needs a tenant_id")
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, got {ttl}")
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {
        "sub": subject or ("bisman-ops" if role == "admin" else f"tenant:{tenant_id}"),
        "role": role,
        "iat": issued,
        "exp": issued + ttl,
    }
    if tenant_id is not None:
        claims["tenant_id"] = int(tenant_id)
    from bisman_ops.change.redact import mask_in_logs

    token = jwt.encode(claims, secret, algorithm=ALGORITHM)
    mask_in_logs(secret, token)  # a bearer token is a credential until it expires
    return token


def verify(token: str, secret: str, *, leeway: int = 5) -> TokenClaims:
    """The claims of a valid token; InvalidToken (never echoing the token) otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            leeway=leeway,
            options={"require": ["exp", "iat", "role", "sub"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"token rejected: {type(exc).__name__}") from exc
    role = claims["role"]
    if role not in ROLES:
        raise InvalidToken(f"token has unknown role {role!r}")
    tenant_id = claims.get("tenant_id")
    if tenant_id is not None and (not isinstance(tenant_id, int) or isinstance(tenant_id, bool)):
        raise InvalidToken("token tenant_id is not an integer")
    if role == "tenant" and tenant_id is None:
        raise InvalidToken("tenant token without tenant_id")
    return TokenClaims(role=role, tenant_id=tenant_id, subject=str(claims["sub"]), expires_at=claims["exp"])


def bearer_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
