"""Stripe webhooks: verify the signature, record the event once in ``events``."""

from __future__ import annotations

import json
from dataclasses import dataclass

import stripe
from psycopg.types.json import Jsonb

from bisman_sandbox.app import db
from bisman_sandbox.app.queries import sql
from bisman_sandbox.app.settings import Settings

SIGNATURE_TOLERANCE_SECONDS = 300


class RejectedWebhook(ValueError):
    """The request is not a genuine, fresh Stripe event."""


@dataclass(frozen=True)
class RecordedEvent:
    event_id: str
    event_type: str
    tenant_id: int | None
    duplicate: bool


def verify(settings: Settings, body: bytes, signature: str | None) -> dict:
    """The event, when ``Stripe-Signature`` matches the body, the secret and the 300 s tolerance."""
    if not signature:
        raise RejectedWebhook("missing Stripe-Signature header")
    try:
        stripe.Webhook.construct_event(
            body.decode("utf-8"), signature, settings.stripe_webhook_secret,
            tolerance=SIGNATURE_TOLERANCE_SECONDS,
        )
    except stripe.SignatureVerificationError as exc:
        raise RejectedWebhook(f"signature verification failed: {exc.user_message or 'no match'}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise RejectedWebhook("body is not a JSON Stripe event") from exc
    # construct_event returns a StripeObject; keep the verified body as plain JSON for the event log.
    event = json.loads(body)
    if not isinstance(event, dict) or not event.get("id") or not event.get("type"):
        raise RejectedWebhook("event without id or type")
    return event


def customer_id(event: dict) -> str | None:
    obj = (event.get("data") or {}).get("object") or {}
    if obj.get("object") == "customer":
        return obj.get("id")
    customer = obj.get("customer")
    if isinstance(customer, dict):  # an expanded customer object
        return customer.get("id")
    return customer if isinstance(customer, str) else None


def record(settings: Settings, event: dict) -> RecordedEvent:
    with db.connect(settings) as conn:
        row = conn.execute(
            sql("record_stripe_event"),
            {
                "customer_id": customer_id(event),
                "type": f"stripe.{event['type']}",
                "payload": Jsonb(event),
                "created": event.get("created"),
                "dedup_key": f"stripe:{event['id']}",
            },
        ).fetchone()
    return RecordedEvent(
        event_id=event["id"],
        event_type=event["type"],
        tenant_id=row["tenant_id"] if row else None,
        duplicate=row is None,
    )
