"""A local certificate chain for the sandbox's TLS listener, as a public CA would issue it: a root,
an intermediate and a leaf of at most 90 days for the API's name, made with ``cryptography``.

Certificates that verifiers accept need what test CAs often leave out (trustme's fail sslyze's
verifier): a non-critical subjectAltName, non-critical extendedKeyUsage serverAuth, critical
keyUsage and basicConstraints, subject and authority key identifiers, and sane validity periods.
Files (PEM) in ``<dir>``: ``root.pem`` (the trust anchor a client is given), ``chain.pem`` (leaf
then intermediate, what the server sends), ``leaf.key``.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LEAF_DAYS = 90
RENEW_BEFORE = timedelta(days=30)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BISMAN sandbox"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: str, key, issuer: x509.Name, issuer_key, days: int, *, ca: bool, path_length=None,
          names: tuple[str, ...] = ()) -> x509.Certificate:
    now = datetime.now(UTC) - timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject)).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                       critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        sans: list[x509.GeneralName] = []
        for n in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = (
            builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure(directory: Path, names: tuple[str, ...]) -> Path:
    """The chain for ``names`` in ``directory`` (made again when missing, for other names, or within
    30 days of the leaf's end); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    chain_file = directory / "chain.pem"
    if chain_file.exists() and (directory / "leaf.key").exists():
        leaf = x509.load_pem_x509_certificates(chain_file.read_bytes())[0]
        current = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        listed = {str(v) for v in current.get_values_for_type(x509.DNSName)} | {
            str(v) for v in current.get_values_for_type(x509.IPAddress)}
        if listed == set(names) and leaf.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE:
            return directory
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("BISMAN sandbox root CA", root_key, _name("BISMAN sandbox root CA"), root_key, 3650,
                 ca=True, path_length=1)
    mid = _cert("BISMAN sandbox intermediate CA", mid_key, root.subject, root_key, 1825, ca=True,
                path_length=0)
    leaf = _cert(names[0], leaf_key, mid.subject, mid_key, LEAF_DAYS, ca=False, names=names)
    (directory / "root.pem").write_bytes(_pem(root))
    chain_file.write_bytes(_pem(leaf) + _pem(mid))
    fd = os.open(directory / "leaf.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return directory
