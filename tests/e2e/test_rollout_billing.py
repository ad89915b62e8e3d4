"""Phase 4 (``billing``) end to end, read from the session's approved rehearsal (staging: the test-mode
checks run): the signed event is accepted and recorded, the wrongly signed one refused, Stripe's own
delivery of the replayed triggers reached ``events``, a Checkout Session for the pro price opened, and
the run report shows what each measured."""

from __future__ import annotations

import pytest

from tests.e2e.rollout_runs import steps

pytestmark = pytest.mark.timeout(2400)

GROUP = "billing"
TRIGGERS = ("payment_intent.succeeded", "invoice.payment_succeeded")


def test_billing_accepts_the_signed_event_refuses_the_wrong_one_and_runs_the_test_mode_checks(rehearsal):
    st = rehearsal.states
    for name in ("signed_event_accepted", "wrongly_signed_event_refused", "triggered_events_delivered",
                 "checkout_session_created", "billing_gate"):
        assert st[f"{GROUP}.{name}"] == "success", (name, st[f"{GROUP}.{name}"])  # run, not skipped

    measured = steps(rehearsal.report)
    accepted = measured[f"{GROUP}.signed_event_accepted"]
    assert 200 <= accepted["status"] < 300
    assert accepted["type"] == "payment_intent.succeeded" and accepted["recorded"]["events_id"] > 0
    refused = measured[f"{GROUP}.wrongly_signed_event_refused"]
    assert 400 <= refused["status"] < 500 and refused["recorded"] is False
    assert refused["event_id"] != accepted["event_id"]

    replayed = measured[f"{GROUP}.stripe_cli_triggers_replayed"]
    delivered = measured[f"{GROUP}.triggered_events_delivered"]["events"]
    assert set(delivered) == set(TRIGGERS)
    for etype in TRIGGERS:
        assert delivered[etype]["object"] == replayed[etype]["object"], etype  # the event about our object
        assert delivered[etype]["events_id"] > 0 and delivered[etype]["event_id"], etype

    pro = measured[f"{GROUP}.prices_active_for_their_plans"]["prices"]["pro"]
    checkout = measured[f"{GROUP}.checkout_session_created"]
    assert checkout["session_id"].startswith("cs_test_")
    assert checkout["status"] == "open" and checkout["mode"] == "subscription" and checkout["has_url"] is True
    assert checkout["price"] == pro["id"] and checkout["amount_total"] == pro["unit_amount"]
