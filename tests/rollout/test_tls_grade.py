"""The TLS grade's rule table on scan summaries: each cap on its own, the worst one wins, and every
reason is listed."""

from __future__ import annotations

import pytest

from bisman_ops.rollout.post_deploy import tls_grade

GOOD = {
    "protocols": {"TLSv1.2": ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"],
                  "TLSv1.3": ["TLS_AES_128_GCM_SHA256"], "TLSv1.0": [], "SSLv3": []},
    "chain_trusted": True, "hostname_matches": True, "expired": False, "hsts_max_age": 31536000,
}


@pytest.mark.parametrize(("change", "grade", "reasons"), [
    ({}, "A+", []),
    ({"hsts_max_age": 86400}, "A", ["HSTS max-age under 180 days (A+ needs 180)"]),
    ({"hsts_max_age": None}, "A-", ["no HSTS header"]),
    ({"protocols": {"TLSv1.2": ["ECDHE-ECDSA-AES128-GCM-SHA256"]}}, "A-", ["TLS 1.3 not offered"]),
    ({"protocols": {**GOOD["protocols"], "TLSv1.1": ["ECDHE-ECDSA-AES128-SHA"]}}, "B",
     ["TLS 1.0 or 1.1 offered"]),
    ({"protocols": {**GOOD["protocols"], "TLSv1.2": ["AES128-GCM-SHA256"]}}, "B",
     ["a suite without forward secrecy accepted"]),
    # Without AEAD there is no TLS 1.3 either (its suites are all AEAD).
    ({"protocols": {"TLSv1.2": ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384"]}}, "B",
     ["no AEAD suite (GCM, ChaCha20-Poly1305, CCM) offered", "TLS 1.3 not offered"]),
    ({"protocols": {**GOOD["protocols"], "SSLv3": ["ECDHE-ECDSA-AES128-SHA"]}}, "F",
     ["SSL 2.0 or 3.0 offered"]),
    ({"chain_trusted": False}, "F", ["the certificate chain does not verify against the trust store"]),
    ({"hostname_matches": False}, "F", ["the certificate does not name the host"]),
    ({"expired": True}, "F", ["the certificate has expired"]),
])
def test_each_rule_caps_the_grade_with_its_reasons(change, grade, reasons):
    verdict = tls_grade.grade({**GOOD, **change})
    assert verdict["grade"] == grade
    assert verdict["caps"] == reasons


def test_the_worst_cap_wins_and_every_reason_is_listed():
    verdict = tls_grade.grade({**GOOD, "hsts_max_age": None, "hostname_matches": False,
                               "protocols": {"TLSv1.0": ["ECDHE-ECDSA-AES128-SHA"]}})
    assert verdict["grade"] == "F"
    assert verdict["caps"] == ["the certificate does not name the host", "TLS 1.0 or 1.1 offered",
                               "no AEAD suite (GCM, ChaCha20-Poly1305, CCM) offered", "TLS 1.3 not offered",
                               "no HSTS header"]


def test_nothing_offered_is_an_f_and_grades_compare_best_first():
    assert tls_grade.grade({**GOOD, "protocols": {"TLSv1.2": []}})["grade"] == "F"
    assert tls_grade.at_least("A+", "A") and tls_grade.at_least("A", "A")
    assert not tls_grade.at_least("A-", "A") and not tls_grade.at_least("B", "A-")
