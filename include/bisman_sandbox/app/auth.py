"""Bearer-token authentication of a request (tokens from ``bisman_ops.app_tokens``)."""

from __future__ import annotations

from flask import Request

from bisman_ops import app_tokens


class Unauthorized(Exception):
    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


def claims_of(request: Request, secret: str) -> app_tokens.TokenClaims | None:
    """The request's verified claims; None without an Authorization header; Unauthorized if invalid."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header is not 'Bearer <token>'")
    try:
        return app_tokens.verify(token.strip(), secret)
    except app_tokens.InvalidToken as exc:
        raise Unauthorized(str(exc)) from exc


def require_role(claims: app_tokens.TokenClaims | None, role: str) -> app_tokens.TokenClaims:
    if claims is None:
        raise Unauthorized("a Bearer token is required")
    if claims.role != role:
        raise Unauthorized(f"this endpoint needs a {role} token", status=403)
    return claims
