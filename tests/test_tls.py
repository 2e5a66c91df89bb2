"""TLS on both listeners ([server] tls_cert / tls_key), reloaded on SIGHUP and when the files
change; the warning for plaintext on a non-loopback address. A test CA made by trustme."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path

import grpc
import httpx
import pytest
import trustme
from helpers import ServerProcess, TlsServer, md, raises_code

from rustbill.pb import common_pb2, integration_pb2_grpc, system_pb2_grpc


def served_cert(port: int, alpn: str) -> bytes:
    """The DER certificate a listener presents to a new connection (not verified here)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return der


def der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def grpc_works(server: ServerProcess, ca_pem: bytes, token: str) -> None:
    """A new connection (no shared subchannel) that trusts only ``ca_pem`` can call the server."""
    opts = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.secure_channel(server.address, grpc.ssl_channel_credentials(ca_pem), options=opts) as ch:
        info = system_pb2_grpc.SystemServiceStub(ch).GetServerInfo(common_pb2.EmptyRequest(), metadata=md(token))
        assert info.public_url.startswith("https://127.0.0.1:")


def http_works(server: ServerProcess, ca_pem: bytes, token: str) -> None:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with httpx.Client(verify=ctx, timeout=10) as client:
        assert client.get(f"{server.http_url}/healthz").text == "ok"
        r = client.post(
            f"{server.http_url}/rustbill.system.SystemService/GetServerInfo",
            headers={"content-type": "application/json", "authorization": f"Bearer {token}"},
            content=b"{}",
        )
        assert r.status_code == 200 and r.json()["publicUrl"] == server.http_url


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def test_both_listeners_serve_tls_and_reload_the_certificate(tmp_path: Path, databases, ca: trustme.CA) -> None:  # type: ignore[no-untyped-def]
    srv = TlsServer(tmp_path, databases.new(), ca, env={"RUSTBILL_SERVER__TLS_RELOAD_SECONDS": "0.5"})
    try:
        srv.start()
        assert "listening on 127.0.0.1:" in srv.log and "(TLS)" in srv.log and "without TLS" not in srv.log
        token = srv.token()
        grpc_works(srv, srv.ca_pem, token)
        http_works(srv, srv.ca_pem, token)
        # a plaintext client gets nowhere
        with grpc.insecure_channel(srv.address) as ch, raises_code(grpc.StatusCode.UNAVAILABLE):
            integration_pb2_grpc.IntegrationServiceStub(ch).ListPlugins(
                common_pb2.EmptyRequest(), metadata=md(token), timeout=5
            )
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{srv.http_port}/healthz", timeout=5)

        # renewed by another CA, then SIGHUP: new connections get the new certificate at once
        ca2 = trustme.CA()
        mark = srv.log_mark()
        leaf2 = srv.write_cert(ca2)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGHUP)
        srv.wait_for_log(r"TLS certificate reloaded from .* \(SIGHUP\)", start=mark)
        assert served_cert(srv.port, "h2") == der(leaf2) == served_cert(srv.http_port, "http/1.1")  # type: ignore[arg-type]
        grpc_works(srv, ca2.cert_pem.bytes(), token)
        http_works(srv, ca2.cert_pem.bytes(), token)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            http_works(srv, srv.ca_pem, token)

        # a broken pair (the key of another certificate) is refused; the served one stays
        mark = srv.log_mark()
        srv.write_cert(trustme.CA(), key_of=ca2.issue_cert("x.example"))
        srv.wait_for_log(r"TLS certificate not reloaded \(the files changed\): .*previous one stays in use", start=mark)
        assert served_cert(srv.port, "h2") == der(leaf2)  # type: ignore[arg-type]
        grpc_works(srv, ca2.cert_pem.bytes(), token)

        # a renewal written to the files is picked up without a signal
        ca3 = trustme.CA()
        mark = srv.log_mark()
        leaf3 = srv.write_cert(ca3)
        srv.wait_for_log(r"TLS certificate reloaded from .* \(the files changed\)", start=mark)
        time.sleep(0.1)
        assert served_cert(srv.port, "h2") == der(leaf3) == served_cert(srv.http_port, "http/1.1")  # type: ignore[arg-type]
        grpc_works(srv, ca3.cert_pem.bytes(), token)
        http_works(srv, ca3.cert_pem.bytes(), token)
    finally:
        srv.stop()


def test_plaintext_on_a_public_address_is_warned_about_once(fresh_server: ServerProcess) -> None:
    fresh_server.env["RUSTBILL_SERVER__LISTEN"] = "0.0.0.0:0"
    fresh_server.start()
    log = fresh_server.log
    assert log.count("without TLS") == 1
    assert "gRPC listens on 0.0.0.0:0 without TLS: Bearer tokens and API keys cross the network in clear" in log
    # SIGHUP without TLS only says so (it must not stop the server)
    assert fresh_server.proc is not None
    mark = fresh_server.log_mark()
    fresh_server.proc.send_signal(signal.SIGHUP)
    fresh_server.wait_for_log("SIGHUP: no TLS certificate configured", start=mark)
    assert fresh_server.proc.poll() is None


def test_a_missing_certificate_stops_the_start_with_a_clear_error(fresh_server: ServerProcess) -> None:
    fresh_server.env["RUSTBILL_SERVER__TLS_CERT"] = str(fresh_server.workdir / "nope.pem")
    fresh_server.env["RUSTBILL_SERVER__TLS_KEY"] = str(fresh_server.workdir / "nope.key")
    with pytest.raises(AssertionError, match=r"server exited"):
        fresh_server.start(timeout=30)
    assert "server.tls_cert / server.tls_key: cannot read" in fresh_server.log
    assert "Traceback" not in fresh_server.log
    res = fresh_server.cli("migrate", check=False)
    assert res.returncode == 0  # the CLI does not need the certificate
    del fresh_server.env["RUSTBILL_SERVER__TLS_KEY"]
    res = fresh_server.cli("migrate", check=False)
    assert res.returncode == 2 and "tls_cert and server.tls_key go together" in res.stderr
