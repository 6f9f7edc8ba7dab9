"""A loopback TLS terminator and the self-signed CA it needs (for the bench and the tests).

``make_certs(dir)`` writes a CA, a server certificate for 127.0.0.1/localhost and a client
certificate, all signed by that CA. `TlsTerminator` accepts TLS on a loopback port and pipes the
plain bytes to an upstream ``host:port`` (dynalite, moto). ``python -m benchmarks._tls --port P
--upstream HOST:PORT --cert C --key K`` runs one in its own process until terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_certs(directory: Path) -> Certs:
    """A fresh CA and the server and client certificates it signs, as PEM files in `directory`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("asgi-dynamo-session test CA"))
        .issuer_name(_name("asgi-dynamo-session test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common: str, usage: x509.ObjectIdentifier) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key

    directory.mkdir(parents=True, exist_ok=True)
    certs = Certs(
        *(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"))
    )
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for (cert_path, key_path), usage, common in (
        ((certs.server_cert, certs.server_key), ExtendedKeyUsageOID.SERVER_AUTH, "127.0.0.1"),
        ((certs.client_cert, certs.client_key), ExtendedKeyUsageOID.CLIENT_AUTH, "client"),
    ):
        pem, key = leaf(common, usage)
        cert_path.write_bytes(pem)
        _write_key(key, key_path)
    return certs


class TlsTerminator:
    """TLS on 127.0.0.1 (a free port unless given), plain TCP to ``upstream``; with
    `client_ca` every client must present a certificate that CA signed."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        certs: Certs,
        *,
        port: int = 0,
        require_client_cert: bool = False,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certs.server_cert, certs.server_key)
        if require_client_cert:
            self.context.load_verify_locations(certs.ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.port = port
        self.connections = 0
        self.handshake_failures = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def endpoint_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context, ssl_handshake_timeout=5
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._tasks.discard(task)
            return
        # Whichever side ends first ends the connection: a pooled client connection never
        # outlives its upstream (dynalite ends idle keep-alive connections), and a client's
        # TLS close is answered at once.
        pipes = {asyncio.create_task(_pipe(reader, up_w)), asyncio.create_task(_pipe(up_r, writer))}
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_w):
                w.close()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


@contextlib.contextmanager
def terminator(endpoint: str) -> Iterator[tuple[str, str]]:
    """A TLS terminator process in front of the plain `endpoint`, with a CA made now; yields
    (https endpoint, CA bundle path) until the block ends."""
    import sys
    import tempfile

    from ._env import ROOT, free_port, spawn

    upstream = endpoint.removeprefix("http://").rstrip("/")
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        certs = make_certs(Path(tmp))
        port = free_port()
        command = [sys.executable, "-m", "benchmarks._tls", "--port", str(port)]
        command += ["--upstream", upstream, "--ca", str(certs.ca)]
        command += ["--cert", str(certs.server_cert), "--key", str(certs.server_key)]
        assert ROOT.is_dir()
        with spawn(command, port):
            yield f"https://127.0.0.1:{port}", str(certs.ca)


async def _main(args: argparse.Namespace) -> None:
    host, _, port = args.upstream.rpartition(":")
    certs = Certs(Path(args.ca), Path(args.cert), Path(args.key), Path(), Path())
    terminator = TlsTerminator(host, int(port), certs, port=args.port)
    await terminator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await terminator.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    asyncio.run(_main(parser.parse_args()))
