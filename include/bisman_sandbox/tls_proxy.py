"""The sandbox's TLS listener: terminates TLS in front of the application the way the load
balancer's HTTPS listener does, and forwards the bytes to the application's plain port.

    python -m bisman_sandbox.tls_proxy --port P --upstream-port Q --cert-dir D [--profile NAME]

Profiles: ``intermediate`` (Mozilla's "intermediate": TLS 1.2 and 1.3, its ECDHE AEAD suites; what
the sandbox runs), and two weak ones a test serves to see the grade drop: ``legacy`` (TLS 1.0 and
1.1 offered too) and ``cbc`` (TLS 1.2 only, CBC suites only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
from pathlib import Path

from bisman_sandbox.context import HOST

# Mozilla intermediate (v5.7) for an ECDSA certificate; TLS 1.3's suites are OpenSSL's defaults.
INTERMEDIATE_CIPHERS = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                        "ECDHE-ECDSA-CHACHA20-POLY1305")
PROFILES = ("intermediate", "legacy", "cbc")
CHUNK = 64 * 1024


def context(cert_dir: Path, profile: str = "intermediate") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_dir / "chain.pem", cert_dir / "leaf.key")
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_ecdh_curve("prime256v1")
    if profile == "intermediate":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    elif profile == "legacy":
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers(f"{INTERMEDIATE_CIPHERS}:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0")
    elif profile == "cbc":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    else:
        raise ValueError(f"unknown TLS profile {profile!r}: one of {', '.join(PROFILES)}")
    return ctx


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def serve(port: int, upstream_port: int, tls: ssl.SSLContext) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            app_r, app_w = await asyncio.wait_for(asyncio.open_connection(HOST, upstream_port), 10)
        except (OSError, TimeoutError):
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, app_w), _pipe(app_r, client_w))

    server = await asyncio.start_server(handle, HOST, port, ssl=tls, ssl_handshake_timeout=10)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--cert-dir", type=Path, required=True)
    parser.add_argument("--profile", choices=PROFILES, default="intermediate")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port, args.upstream_port, context(args.cert_dir, args.profile)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
