"""Scan a TLS endpoint with sslyze and print a JSON summary for ``rollout.post_deploy.tls_grade``.

sslyze pins an older ``cryptography`` than the Airflow environment's, so it lives in a virtualenv
of its own and this module runs there as a child process (``TLS_SCANNER_PYTHON``; the project's
``scripts/setup.sh`` makes ``.venv-tls``); it imports nothing of Airflow or of the rest of the
project. The summary holds protocol and suite names, the chain's verdicts, HSTS and Mozilla
"intermediate" issues, never key material:

    python -m bisman_ops.tls_scan HOST PORT [--server-name NAME] [--ca-file PEM] [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

# sslyze's scan command per protocol; its result is the attribute of the same name in lower case.
PROTOCOL_COMMANDS = {
    "SSLv2": "SSL_2_0_CIPHER_SUITES", "SSLv3": "SSL_3_0_CIPHER_SUITES",
    "TLSv1.0": "TLS_1_0_CIPHER_SUITES", "TLSv1.1": "TLS_1_1_CIPHER_SUITES",
    "TLSv1.2": "TLS_1_2_CIPHER_SUITES", "TLSv1.3": "TLS_1_3_CIPHER_SUITES",
}


def names_host(leaf, host: str) -> bool:
    """Whether the leaf's subjectAltName names ``host`` (a wildcard covers one label)."""
    from cryptography import x509

    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    host = host.lower().rstrip(".")
    for pattern in (n.lower().rstrip(".") for n in sans.get_values_for_type(x509.DNSName)):
        if pattern == host or (pattern.startswith("*.") and host.partition(".")[2] == pattern[2:]):
            return True
    return False


def scan(host: str, port: int, server_name: str | None, ca_file: Path | None, timeout_s: int) -> dict:
    from sslyze import (
        CertificateInfoExtraArgument,
        ScanCommand,
        ScanCommandsExtraArguments,
        Scanner,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        ServerScanResultIncomplete,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )

    name = server_name or host
    commands = {*SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER, ScanCommand.HTTP_HEADERS,
                *(getattr(ScanCommand, c) for c in PROTOCOL_COMMANDS.values())}
    extra = ScanCommandsExtraArguments(
        certificate_info=CertificateInfoExtraArgument(custom_ca_file=ca_file) if ca_file else None)
    request = ServerScanRequest(
        server_location=ServerNetworkLocation(hostname=name, port=port, ip_address=host),
        network_configuration=ServerNetworkConfiguration(tls_server_name_indication=name,
                                                         network_timeout=timeout_s),
        scan_commands=commands, scan_commands_extra_arguments=extra)
    scanner = Scanner()
    scanner.queue_scans([request])
    result = next(iter(scanner.get_results()))
    if result.scan_status != ServerScanStatusEnum.COMPLETED:
        error = result.connectivity_error_trace or result.scan_status
        return {"reachable": False, "server_name": name, "error": str(error)[-500:]}
    found = result.scan_result
    protocols = {}
    for protocol, command in PROTOCOL_COMMANDS.items():
        attempt = getattr(found, command.lower())
        accepted = attempt.result.accepted_cipher_suites if attempt.result else []
        protocols[protocol] = [s.cipher_suite.openssl_name for s in accepted]
    deployment = found.certificate_info.result.certificate_deployments[0]
    leaf = deployment.received_certificate_chain[0]
    trusted = [r for r in deployment.path_validation_results
               if r.was_validation_successful and (ca_file is None or r.trust_store.name != "Mozilla")]
    headers = found.http_headers.result
    hsts = headers.strict_transport_security_header if headers else None
    try:
        check_server_against_tls_configuration(
            result, MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE))
        mozilla_issues: dict[str, str] = {}
    except ServerNotCompliantWithTlsConfiguration as exc:
        mozilla_issues = {str(k): str(v) for k, v in exc.issues.items()}
    except ServerScanResultIncomplete as exc:
        mozilla_issues = {"scan": f"incomplete: {exc}"}
    not_after = leaf.not_valid_after_utc
    return {
        "reachable": True,
        "server_name": name,
        "protocols": protocols,
        "chain_trusted": bool(trusted),
        "trust_stores": sorted({r.trust_store.name for r in trusted}),
        "hostname_matches": names_host(leaf, name),
        "expired": not_after < datetime.now(UTC),
        "leaf_not_after": not_after.isoformat(),
        "leaf_days": (not_after - leaf.not_valid_before_utc).days,
        "chain_length": len(deployment.received_certificate_chain),
        "hsts_max_age": hsts.max_age if hsts else None,
        "mozilla_intermediate_issues": mozilla_issues,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--server-name")
    parser.add_argument("--ca-file", type=Path)
    parser.add_argument("--timeout", type=int, default=10)
    args = parser.parse_args(argv)
    json.dump(scan(args.host, args.port, args.server_name, args.ca_file, args.timeout), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
