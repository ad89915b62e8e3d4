"""Minting and verifying the application's HS256 bearer tokens."""

from __future__ import annotations

import time

import pytest

from bisman_ops import app_tokens

SECRET = "test-jwt-secret-0123456789abcdef0123456789abcdef"


def test_tenant_token_round_trips_its_claims():
    claims = app_tokens.verify(app_tokens.mint(SECRET, tenant_id=42, ttl=60), SECRET)
    assert (claims.role, claims.tenant_id, claims.subject) == ("tenant", 42, "tenant:42")
    assert claims.expires_at - time.time() == pytest.approx(60, abs=2)


def test_admin_token_has_no_tenant():
    claims = app_tokens.verify(app_tokens.mint(SECRET, role="admin"), SECRET)
    assert (claims.role, claims.tenant_id) == ("admin", None)


def test_token_signed_with_another_secret_is_rejected_without_echoing_it():
    token = app_tokens.mint("another-secret-0123456789abcdef0123456789abcdef", role="admin")
    with pytest.raises(app_tokens.InvalidToken) as caught:
        app_tokens.verify(token, SECRET)
    assert token not in str(caught.value)


def test_expired_token_is_rejected():
    token = app_tokens.mint(SECRET, tenant_id=1, ttl=60, now=time.time() - 600)
    with pytest.raises(app_tokens.InvalidToken, match="expired"):
        app_tokens.verify(token, SECRET)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"role": "tenant"}, "needs a tenant_id"),
        ({"role": "root", "tenant_id": 1}, "unknown role"),
        ({"tenant_id": 1, "ttl": 0}, "ttl must be positive"),
    ],
)
def test_mint_refuses_unusable_claims(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        app_tokens.mint(SECRET, **kwargs)
