"""A TLS grade computed locally with the rules of the SSL Labs rating guide that a scan of our own
endpoint can decide (SSL Labs itself cannot be reached from every network, and grades a public
name only).

The scan (``tls_scan``, sslyze in a process of its own) summarises what the endpoint offers; this
module turns that summary into a grade and the reason for every cap, so an operator sees why it is
not an A. The rule table, worst first:

============================================================  =====
The certificate chain does not verify against the trust store  F
The certificate does not name the host, or has expired         F
SSL 2.0 or SSL 3.0 offered                                     F
TLS 1.0 or TLS 1.1 offered                                     B
A suite without forward secrecy (no ECDHE/DHE key exchange)    B
No AEAD suite (GCM, ChaCha20-Poly1305, CCM) offered            B
TLS 1.3 not offered                                            A-
No HSTS header                                                 A-
An HSTS max-age under 180 days                                 A
None of the above (HSTS max-age of at least 180 days)          A+
============================================================  =====
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GRADES = ("A+", "A", "A-", "B", "C", "F")
HSTS_MIN_MAX_AGE_S = 180 * 24 * 3600
AEAD_MARKERS = ("GCM", "CHACHA20", "CCM")
FS_MARKERS = ("ECDHE", "DHE")  # TLS 1.3 suites always have forward secrecy

# (condition on the summary, cap, reason)
RULES: tuple[tuple[str, str, str], ...] = (
    ("untrusted", "F", "the certificate chain does not verify against the trust store"),
    ("name_mismatch", "F", "the certificate does not name the host"),
    ("expired", "F", "the certificate has expired"),
    ("ssl_offered", "F", "SSL 2.0 or 3.0 offered"),
    ("legacy_tls", "B", "TLS 1.0 or 1.1 offered"),
    ("no_forward_secrecy", "B", "a suite without forward secrecy accepted"),
    ("no_aead", "B", "no AEAD suite (GCM, ChaCha20-Poly1305, CCM) offered"),
    ("no_tls13", "A-", "TLS 1.3 not offered"),
    ("no_hsts", "A-", "no HSTS header"),
    ("short_hsts", "A", "HSTS max-age under 180 days (A+ needs 180)"),
)


def findings(scan: Mapping[str, Any]) -> dict[str, bool]:
    """Which rule conditions hold for a scan summary: ``protocols`` ({name: [suite, ...]} of the
    accepted suites per protocol, OpenSSL names), ``chain_trusted``, ``hostname_matches``,
    ``expired``, ``hsts_max_age`` (None when no header)."""
    protocols = {name: list(suites) for name, suites in (scan.get("protocols") or {}).items() if suites}
    below_13 = [s for name, suites in protocols.items() if name != "TLSv1.3" for s in suites]
    every = [s for suites in protocols.values() for s in suites]
    hsts = scan.get("hsts_max_age")
    return {
        "untrusted": not scan.get("chain_trusted"),
        "name_mismatch": not scan.get("hostname_matches"),
        "expired": bool(scan.get("expired")),
        "ssl_offered": bool({"SSLv2", "SSLv3"} & set(protocols)),
        "legacy_tls": bool({"TLSv1.0", "TLSv1.1"} & set(protocols)),
        "no_forward_secrecy": any(not s.startswith(FS_MARKERS) for s in below_13),
        "no_aead": bool(every) and not any(marker in s.upper() for s in every for marker in AEAD_MARKERS),
        "no_tls13": "TLSv1.3" not in protocols,
        "no_hsts": hsts is None,
        "short_hsts": hsts is not None and int(hsts) < HSTS_MIN_MAX_AGE_S,
    }


def grade(scan: Mapping[str, Any]) -> dict[str, Any]:
    """``{"grade", "caps": [reason, ...]}``: the worst cap that applies, A+ when none does."""
    found = findings(scan)
    if not any((scan.get("protocols") or {}).values()):
        return {"grade": "F", "caps": ["no protocol offered (nothing answered the handshake)"]}
    caps = [(cap, reason) for key, cap, reason in RULES if found[key]]
    worst = max((GRADES.index(cap) for cap, _ in caps), default=0)
    return {"grade": GRADES[worst], "caps": [reason for _, reason in caps]}


def at_least(got: str, required: str) -> bool:
    """Whether grade ``got`` is ``required`` or better."""
    return GRADES.index(got) <= GRADES.index(required)
