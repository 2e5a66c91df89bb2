"""TLS for both listeners from one certificate and key file ([server] tls_cert / tls_key), reloaded
without a restart when the files change (checked every ``interval`` seconds) or on SIGHUP.

A reload reads both files and checks that they form a usable pair before anything changes; a
broken or half-written pair is logged and the previous one stays in use, so a renewal that writes
the certificate and the key one after the other never takes the listeners down. New connections
get the new certificate; open ones keep theirs.

- native gRPC: ``grpc.dynamic_ssl_server_credentials``, whose fetcher grpcio asks on each new
  connection; it hands over the new pair once after each reload;
- HTTP (uvicorn): one ``ssl.SSLContext``, given the new pair with ``load_cert_chain`` (OpenSSL
  copies the certificate into each new connection, so the change applies to the next handshake).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc

__all__ = ["TlsFiles", "is_loopback"]

log = logging.getLogger("rustbill.tls")


def is_loopback(listen: str) -> bool:
    """Whether a ``HOST:PORT`` listens only on this machine."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


class TlsError(Exception):
    pass


def _pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """The certificate chain and key, read and checked to work together (TlsError otherwise)."""
    try:
        cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {exc.filename}: {exc.strerror}") from None
    with _files(cert_pem, key_pem) as (c, k):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(c, k)
        except ssl.SSLError as exc:
            raise TlsError(f"{cert} and {key} are not a usable certificate and key: {exc.reason or exc}") from None
    return cert_pem, key_pem


@contextlib.contextmanager
def _files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """The pair as private temporary files (``ssl`` loads certificates only from files)."""
    with tempfile.TemporaryDirectory(prefix="rustbill-tls-") as d:
        c, k = Path(d) / "cert.pem", Path(d) / "key.pem"
        for path, data in ((c, cert_pem), (k, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield str(c), str(k)


class TlsFiles:
    """The server's certificate and key, for both listeners."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._stamp = self._stat()
        try:
            self._pem = _pair(cert, key)
        except TlsError as exc:
            raise SystemExit(f"server.tls_cert / server.tls_key: {exc}") from None
        self.version = 1
        self._contexts: list[ssl.SSLContext] = []

    def _stat(self) -> tuple[tuple[int, int], ...]:
        out = []
        for p in (self.cert, self.key):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, -1))
        return tuple(out)

    # ---- the listeners' views

    def grpc_credentials(self) -> grpc.ServerCredentials:
        served = self.version

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by grpcio on each new connection (in its own thread): None keeps the current pair.
            nonlocal served
            if served == self.version:
                return None
            served = self.version
            cert_pem, key_pem = self._pem
            return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)])

        cert_pem, key_pem = self._pem
        return grpc.dynamic_ssl_server_credentials(
            grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)]),
            fetch,  # type: ignore[arg-type]  # grpcio takes None as "keep the current pair"; its stubs omit None
        )

    def ssl_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if alpn:
            ctx.set_alpn_protocols(alpn)
        with _files(*self._pem) as (c, k):
            ctx.load_cert_chain(c, k)
        self._contexts.append(ctx)
        return ctx

    # ---- reloading

    def reload(self, why: str) -> bool:
        """Read the files again; True when the new pair is in use."""
        self._stamp = self._stat()
        try:
            pem = _pair(self.cert, self.key)
        except TlsError as exc:
            log.error("TLS certificate not reloaded (%s): %s; the previous one stays in use", why, exc)
            return False
        if pem == self._pem:
            return False
        with _files(*pem) as (c, k):
            for ctx in self._contexts:
                ctx.load_cert_chain(c, k)
        self._pem = pem
        self.version += 1
        log.info("TLS certificate reloaded from %s (%s)", self.cert, why)
        return True

    async def watch(self, interval: float) -> None:
        """Reload whenever either file changes (size or modification time)."""
        while True:
            await asyncio.sleep(interval)
            if self._stat() != self._stamp:
                self.reload("the files changed")
