"""The built-in email notifier, against real local SMTP servers (aiosmtpd): STARTTLS with a certificate
from a test CA (trustme), implicit TLS, AUTH with one accepted user, a plain relay, a server that never
greets. aiosmtpd answers a refused login with 535 (the authenticator returns
AuthResult(success=False, handled=False)) and offers AUTH only over TLS unless told otherwise.

Two ways in: in process through rustbill.domain.Channels.send (and Providers for the admin page and
actions) on a real database, and through the running server's RPCs (CreatePluginInterface,
CheckPluginHealth, CallPluginAction admin_send_test, GetPluginAdminPage).
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import ssl
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from helpers import (
    SHIPPED_PLUGINS,
    Databases,
    PluginHost,
    ServerProcess,
    create_interface,
    free_port,
    md,
    raises_code,
)

from rustbill import errors
from rustbill.db import Database
from rustbill.pb import integration_pb2 as pb
from rustbill.plugins import load_plugin

PLUGIN = SHIPPED_PLUGINS / "email.py"
USER = "billing@example.com"
PASSWORD = "S3cret-smtp-pass!"  # must never show up in pages, results or logs
SERVER_NAME = "smtp.test"


# ---------------------------------------------------------------- the SMTP peer


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    login: str | None
    tls: bool

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.content, policy=email.policy.default)  # type: ignore[return-value]


class Handler:
    """Stores every accepted message; refuses the recipients in ``refuse`` with 550."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.refuse: set[str] = set()
        self.logins: list[tuple[str, bool]] = []
        self.require_login = False

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: Any) -> str:
        if self.require_login and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        tls = bool(session.ssl) or server.transport.get_extra_info("ssl_object") is not None  # STARTTLS or implicit
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content, login, tls))
        return "250 2.0.0 Ok: queued"

    def authenticator(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
            self.logins.append((auth_data.login.decode(), ok))
            if ok:
                return AuthResult(success=True, auth_data=auth_data.login)
        # handled=False makes aiosmtpd answer 535 (success=False alone leaves the client waiting)
        return AuthResult(success=False, handled=False)


class SmtpPeer:
    """An aiosmtpd server in a thread on 127.0.0.1. ``mode``: starttls (STARTTLS required, AUTH required),
    tls (implicit TLS, AUTH required), plain (no TLS, no AUTH: a relay), plain_auth (no TLS; AUTH is then
    not offered, as aiosmtpd does by default)."""

    def __init__(self, ca: trustme.CA, mode: str) -> None:
        self.handler = Handler()
        self.port = free_port()
        self.mode = mode
        kw: dict[str, Any] = {"server_hostname": SERVER_NAME, "ready_timeout": 10}
        cert = ca.issue_cert("127.0.0.1", "localhost", SERVER_NAME)
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(server_ctx)
        auth = {"authenticator": self.handler.authenticator, "auth_required": True}
        if mode == "starttls":
            kw |= {"tls_context": server_ctx, "require_starttls": True, **auth}
        elif mode == "tls":
            # aiosmtpd sees implicit TLS as no TLS: AUTH must be allowed without STARTTLS, and its
            # auth_required would then warn; Handler.handle_MAIL requires the login instead.
            kw |= {"ssl_context": server_ctx, "auth_require_tls": False, "authenticator": self.handler.authenticator}
            self.handler.require_login = True
        elif mode == "plain_auth":
            kw |= {"authenticator": self.handler.authenticator}
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **kw)

    def start(self) -> SmtpPeer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def mails(self) -> list[Mail]:
        return self.handler.mails


class SilentServer:
    """Accepts TCP connections and never says anything (an SMTP server that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


@pytest.fixture
def smtp_peer(ca: trustme.CA) -> Iterator[Any]:
    made: list[SmtpPeer] = []

    def make(mode: str = "starttls") -> SmtpPeer:
        p = SmtpPeer(ca, mode).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


def config(peer: SmtpPeer | int, ca_pem: str, **kw: Any) -> dict[str, Any]:
    port = peer if isinstance(peer, int) else peer.port
    security = {"starttls": "starttls", "tls": "tls"}.get(getattr(peer, "mode", ""), "none")
    cfg = {
        "host": "127.0.0.1",
        "port": port,
        "security": security,
        "username": USER,
        "password": PASSWORD,
        "from_address": "Example Billing <billing@example.com>",
        "ca_pem": ca_pem,
        "helo_hostname": "rustbill.test",
        "timeout": 10,
    }
    if security == "none":
        cfg["username"] = ""
    return {**cfg, **kw}


class Host(PluginHost):
    """The billing core's side in process (see helpers.PluginHost)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, "email", call_timeout=30)


@pytest.fixture(scope="module")
def db_url(databases: Databases) -> str:
    return databases.new()


@pytest.fixture
async def host(db_url: str) -> AsyncIterator[Host]:
    db = Database(db_url)
    await db.migrate()
    h = Host(db)
    yield h
    await h.close()  # (its workers, the SDK's client, its temporary folder)
    await db.dispose()


def message(**kw: Any) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "event": "invoice.paid",
        "subject": "Invoice 2024-0042 paid — 谢谢",
        "text": "Thank you, 12.50 CNY received.",
        "html": "<p>Thank you, <b>12.50 CNY</b> received.</p>",
        "to": ["Alice Customer <alice@example.net>"],
        **kw,
    }


# ---------------------------------------------------------------- the module name


def test_the_plugin_named_email_does_not_shadow_the_standard_library() -> None:
    loaded = load_plugin(PLUGIN, PLUGIN.read_bytes(), "email")
    assert loaded.module.__name__.startswith("rustbill_plugin_email_")
    assert loaded.module.EmailMessage.__module__ == "email.message"
    assert sys.modules["email"].__file__ != str(PLUGIN) and "site-packages" not in str(sys.modules["email"].__file__)
    import aiosmtplib.email as aio_email  # imports the stdlib email package itself

    assert aio_email.email.message is sys.modules["email.message"]


# ---------------------------------------------------------------- send through Channels


async def test_starttls_login_and_the_message(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("starttls")
    iid = await host.interface(config(peer, ca_pem, reply_to="support@example.com", subject_prefix="[RustBill] "))
    msg = message(to=["Alice Customer <alice@example.net>", "bob@example.org"])
    result = await host.channels.send(iid, msg)
    assert result["delivered"] and result["error"] == ""

    assert len(peer.mails) == 1
    mail = peer.mails[0]
    assert mail.login == USER and mail.tls  # logged in, after STARTTLS
    assert mail.mail_from == "billing@example.com" and mail.rcpt_tos == ["alice@example.net", "bob@example.org"]
    m = mail.message
    assert m["From"] == "Example Billing <billing@example.com>"
    assert m["To"] == "Alice Customer <alice@example.net>, bob@example.org"
    assert m["Subject"] == "[RustBill] Invoice 2024-0042 paid — 谢谢"
    assert m["Reply-To"] == "support@example.com" and m["Auto-Submitted"] == "auto-generated"
    assert m["X-RustBill-Event"] == "invoice.paid" and m["Date"]
    assert m["Message-ID"] == f"<rustbill.{msg['id']}@example.com>" == result["id"]
    assert m.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in m.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert parts["text/plain"].strip() == "Thank you, 12.50 CNY received."
    assert parts["text/html"].strip() == "<p>Thank you, <b>12.50 CNY</b> received.</p>"

    # a resend of the same message has the same Message-ID (receivers can drop the duplicate)
    await host.channels.send(iid, msg)
    assert peer.mails[1].message["Message-ID"] == m["Message-ID"]


async def test_implicit_tls(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("tls")
    iid = await host.interface(config(peer, ca_pem))
    assert (await host.channels.send(iid, message()))["delivered"]
    assert peer.mails[0].login == USER and peer.mails[0].tls


async def test_wrong_password_is_a_clear_login_failure(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("starttls")
    iid = await host.interface(config(peer, ca_pem, password="not-the-password"))
    with pytest.raises(
        errors.PermissionDenied, match=r"SMTP login refused for user 'billing@example.com' by .*: 535"
    ) as ei:
        await host.channels.send(iid, message())
    assert "not-the-password" not in ei.value.message
    assert peer.mails == [] and peer.handler.logins and not any(ok for _, ok in peer.handler.logins)


async def test_recipients(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("starttls")
    iid = await host.interface(
        config(peer, ca_pem, default_recipients=["ops@example.com", "Finance <fin@example.com>"])
    )
    await host.channels.send(iid, message(to=[]))
    assert peer.mails[-1].rcpt_tos == ["ops@example.com", "fin@example.com"]
    assert peer.mails[-1].message["To"] == "ops@example.com, Finance <fin@example.com>"

    nobody = await host.interface(config(peer, ca_pem))
    with pytest.raises(errors.InvalidArgument, match="no recipients: the message has no 'to'"):
        await host.channels.send(nobody, message(to=[]))
    for bad in ("not-an-address", "a@b@c", "x@example.com\r\nBcc: evil@example.com", "two words@example.com"):
        with pytest.raises(errors.InvalidArgument, match="is not an email address"):
            await host.channels.send(nobody, message(to=[bad]))

    peer.handler.refuse = {"ghost@example.net"}
    with pytest.raises(errors.InvalidArgument, match=r"refused every recipient: ghost@example.net \(550 5\.1\.1"):
        await host.channels.send(nobody, message(to=["ghost@example.net"]))
    some = await host.channels.send(nobody, message(to=["ghost@example.net", "alice@example.net"]))
    assert some["delivered"] and "ghost@example.net (550 5.1.1" in some["error"]
    assert peer.mails[-1].rcpt_tos == ["alice@example.net"]
    assert len(peer.mails) == 2


async def test_bodies(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("plain")
    iid = await host.interface(config(peer, ca_pem))
    await host.channels.send(iid, message(html=""))
    only_text = peer.mails[-1].message
    assert only_text.get_content_type() == "text/plain" and "12.50 CNY" in only_text.get_content()
    await host.channels.send(
        iid, message(text="", html="<h1>Paid</h1><p>12.50&nbsp;CNY<br>thanks</p><script>x()</script>")
    )
    m = peer.mails[-1].message
    parts = {p.get_content_type(): p.get_content() for p in m.iter_parts()}
    assert parts["text/plain"].splitlines() == ["Paid", "", "12.50\xa0CNY", "thanks"]
    await host.channels.send(iid, {"event": "usage.report", "data": {"cpu": "2"}, "to": ["a@example.com"]})
    m = peer.mails[-1].message
    assert m["Subject"] == "usage.report" and '"cpu": "2"' in m.get_content()
    assert m["Message-ID"].startswith("<rustbill.") and peer.mails[-1].login is None and not peer.mails[-1].tls


async def test_tls_trust(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("tls")
    system_cas = await host.interface(config(peer, ""))
    untrusted_re = r"TLS handshake with 127\.0\.0\.1:\d+ failed: the server's certificate is not trusted .*set ca_pem"
    with pytest.raises(errors.FailedPrecondition, match=untrusted_re):
        await host.channels.send(system_cas, message())
    other_ca = trustme.CA().cert_pem.bytes().decode()
    wrong = await host.interface(config(peer, other_ca))
    with pytest.raises(errors.FailedPrecondition, match="ca_pem is not the CA that signed it"):
        await host.channels.send(wrong, message())
    skip = await host.interface(config(peer, "", tls_insecure_skip_verify=True))
    assert (await host.channels.send(skip, message()))["delivered"]

    starttls = smtp_peer("starttls")
    untrusted = await host.interface(config(starttls, ""))
    with pytest.raises(
        errors.FailedPrecondition, match=r"STARTTLS with .* failed: the server's certificate is not trusted"
    ):
        await host.channels.send(untrusted, message())
    assert starttls.mails == [] and starttls.handler.logins == []  # the password was never sent

    garbage = await host.interface(config(peer, "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"))
    with pytest.raises(errors.FailedPrecondition, match="ca_pem is not a usable PEM certificate"):
        await host.channels.send(garbage, message())


async def test_security_that_does_not_match_the_server(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    plain = smtp_peer("plain")
    with pytest.raises(errors.FailedPrecondition, match="does not offer STARTTLS; use security=tls"):
        await host.channels.send(await host.interface(config(plain, ca_pem, security="starttls")), message())
    with pytest.raises(errors.FailedPrecondition, match=r"TLS handshake with 127\.0\.0\.1:\d+ failed"):
        await host.channels.send(await host.interface(config(plain, ca_pem, security="tls", timeout=3)), message())
    no_auth = smtp_peer("plain_auth")
    with pytest.raises(errors.FailedPrecondition, match="does not offer AUTH on an unencrypted connection"):
        await host.channels.send(await host.interface(config(no_auth, ca_pem, username=USER)), message())
    assert plain.mails == [] and no_auth.mails == []


async def test_unreachable_and_silent_servers(host: Host, ca_pem: str) -> None:
    port = free_port()
    iid = await host.interface(config(port, ca_pem))
    with pytest.raises(errors.Unavailable, match=rf"cannot connect to SMTP server 127\.0\.0\.1:{port}"):
        await host.channels.send(iid, message())
    assert f"cannot connect to SMTP server 127.0.0.1:{port}" in (await host.health(iid) or "")

    silent = SilentServer()
    try:
        iid = await host.interface(config(silent.port, ca_pem, timeout=1))
        with pytest.raises(errors.Unavailable, match=r"did not answer within 1s \(connecting\)"):
            await host.channels.send(iid, message())
        assert "did not answer within 1s" in (await host.health(iid) or "")
    finally:
        silent.stop()


# ---------------------------------------------------------------- health, admin page and actions in process


async def test_health_check_says_what_failed(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("starttls")
    assert await host.health(await host.interface(config(peer, ca_pem))) is None
    assert peer.handler.logins == [(USER, True)] and peer.mails == []  # logged in, sent nothing
    wrong = await host.health(await host.interface(config(peer, ca_pem, password="nope-nope")))
    assert wrong and "SMTP login refused for user 'billing@example.com'" in wrong and "535" in wrong
    untrusted = await host.health(await host.interface(config(peer, "")))
    assert untrusted and "certificate is not trusted" in untrusted
    plain = smtp_peer("plain")
    no_starttls = await host.health(await host.interface(config(plain, ca_pem, security="starttls")))
    assert no_starttls and "does not offer STARTTLS" in no_starttls
    assert await host.health(await host.interface(config(plain, ca_pem))) is None


async def test_admin_send_test_page_and_recent(host: Host, smtp_peer: Any, ca_pem: str) -> None:
    peer = smtp_peer("starttls")
    iid = await host.interface(config(peer, ca_pem, default_recipients=["ops@example.com"]))
    result = await host.action(iid, "admin_send_test", to="qa@example.com")
    assert result["delivered"] and result["to"] == ["qa@example.com"] and result["refused"] == {}
    m = peer.mails[-1].message
    assert m["Subject"] == "RustBill test email" and m["Message-ID"] == result["message_id"]
    assert {p.get_content_type() for p in m.iter_parts()} == {"text/plain", "text/html"}
    assert (await host.action(iid, "admin_send_test"))["to"] == ["ops@example.com"]
    with pytest.raises(errors.InvalidArgument, match="is not an email address"):
        await host.action(iid, "admin_send_test", to="nobody")
    peer.handler.refuse = {"ghost@example.net"}
    with pytest.raises(errors.InvalidArgument, match="refused every recipient"):
        await host.action(iid, "admin_send_test", to="ghost@example.net")
    with pytest.raises(errors.InvalidArgument, match="cannot override configuration field"):
        await host.action(iid, "admin_send_test", host="evil.example")

    recent = (await host.action(iid, "admin_recent"))["recent"]
    assert [(r["kind"], r["delivered"]) for r in recent] == [("test", False), ("test", True), ("test", True)]
    assert "refused every recipient" in recent[0]["error"]

    page, title = await host.providers.admin_page(iid)
    assert title == "Email (SMTP)"
    assert f"127.0.0.1:{peer.port}" in page and "verified against ca_pem" in page and "qa@example.com" in page
    assert "billing@example.com (password set)" in page and PASSWORD not in page and "admin_send_test" in page


# ---------------------------------------------------------------- through the server


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"from_address": USER}, r"config_json\.host: is required"),
        ({"host": "smtp.example.com"}, r"config_json\.from_address: is required"),
        ({"host": "smtp.example.com", "from_address": USER, "security": "ssl"}, r"config_json\.security: "),
        ({"host": "smtp.example.com", "from_address": USER, "port": 0}, r"config_json\.port: "),
        ({"host": "smtp example", "from_address": USER}, r"config_json\.host: "),
        ({"host": "smtp.example.com", "from_address": "billing"}, r"config_json\.from_address: "),
        ({"host": "h", "from_address": USER, "default_recipients": ["x"]}, r"config_json\.default_recipients\[0\]: "),
        ({"host": "h", "from_address": USER, "ca_pem": "not a pem"}, r"config_json\.ca_pem: "),
        ({"host": "h", "from_address": USER, "password": 12345}, r"config_json\.password: fails 'type'"),
        ({"host": "h", "from_address": USER, "tls": True}, r"'tls' was unexpected"),
    ],
)
def test_create_interface_validates_the_config(stub, admin_token: str, cfg: dict[str, Any], match: str) -> None:  # type: ignore[no-untyped-def]
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, match) as info:
        create_interface(stub, admin_token, "email", json.dumps(cfg))
    assert "12345" not in info["details"]


def _health(stub, token: str, iface) -> pb.CheckPluginHealthResponse:  # type: ignore[no-untyped-def]
    return stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(token), timeout=30)


def _action(stub, token: str, iface, function: str, **args: Any) -> Any:  # type: ignore[no-untyped-def]
    req = pb.CallPluginActionRequest(interface_id=iface.id, function=function, args_json=json.dumps(args))
    return json.loads(stub.CallPluginAction(req, metadata=md(token), timeout=30).result_json)


def test_through_the_server(server: ServerProcess, stub, admin_token: str, smtp_peer: Any, ca_pem: str) -> None:  # type: ignore[no-untyped-def]
    peer = smtp_peer("starttls")
    good = create_interface(stub, admin_token, "email", json.dumps(config(peer, ca_pem)))
    assert good.plugin_version == "1.0.0" and good.has_admin_page and good.plugin_type == "notifier"
    reply = _health(stub, admin_token, good)
    assert reply.is_healthy, reply.error

    bad = create_interface(stub, admin_token, "email", json.dumps(config(peer, ca_pem, password="wrong-pass")))
    reply = _health(stub, admin_token, bad)
    assert not reply.is_healthy and "SMTP login refused for user 'billing@example.com'" in reply.error
    got = stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=bad.id), metadata=md(admin_token))
    assert got.interface.health_error == reply.error
    with raises_code(grpc.StatusCode.PERMISSION_DENIED, r"SMTP login refused .*535") as info:
        _action(stub, admin_token, bad, "admin_send_test", to="qa@example.com")
    assert "wrong-pass" not in info["details"]

    result = _action(stub, admin_token, good, "admin_send_test", to="qa@example.com")
    assert result["delivered"] and result["to"] == ["qa@example.com"]
    mail = peer.mails[-1]
    assert mail.rcpt_tos == ["qa@example.com"] and mail.login == USER
    assert mail.message["From"] == "Example Billing <billing@example.com>"
    assert mail.message["Subject"] == "RustBill test email"
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"recipient 'nobody' is not an email address"):
        _action(stub, admin_token, good, "admin_send_test", to="nobody")

    page = stub.GetPluginAdminPage(pb.GetPluginAdminPageRequest(interface_id=good.id), metadata=md(admin_token))
    assert page.title == "Email (SMTP)"
    assert f"127.0.0.1:{peer.port}" in page.html_content and "qa@example.com" in page.html_content
    assert PASSWORD not in page.html_content
    assert PASSWORD not in server.log and "wrong-pass" not in server.log
