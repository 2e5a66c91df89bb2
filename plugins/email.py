"""email — a notifier that sends each message as an email over SMTP (aiosmtplib).

- ``send``: builds an ``email.message.EmailMessage`` — text/plain, plus text/html as a
  multipart/alternative when the message has HTML — To the message's ``to`` or the configured default
  recipients, ``Message-ID`` derived from the message's ``id`` (the same on every resend, so
  duplicates can be recognised), and sends it in one SMTP session: connect (implicit TLS, or
  STARTTLS, or plain), AUTH when a username is set, MAIL/RCPT/DATA, QUIT.
- Failures say what failed: login refused (535) → PERMISSION_DENIED "SMTP login refused"; no
  connection, timeouts before sending, 4xx (temporary) replies → UNAVAILABLE; every recipient
  refused → INVALID_ARGUMENT naming them (some refused: delivered, with ``error`` naming those);
  certificate or STARTTLS/AUTH not offered → FAILED_PRECONDITION; no answer after the message was
  handed over → DEADLINE_EXCEEDED (it may have been accepted).
- ``health_check``: connect, TLS as configured, login, NOOP, QUIT — and reports the step that failed.
- ``admin_page`` (settings, the last sends) and ``admin_send_test`` (``to`` = an address or a list).

The plugin file is named email.py (plugin id ``email``); the host loads it as a module of its own
(``rustbill_plugin_email_<hash>``), so ``import email`` below is Python's standard library.
See docs/builtin/email.md.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import html
import json
import re
import ssl
import time
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

import aiosmtplib

from rustbill import sdk

PLUGIN_TYPE = "notifier"

log = sdk.logger(__name__)

SECURITY = ("starttls", "tls", "none")
DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_RECENT = 20
_ADDRESS_RE = re.compile(r"^[^\s<>\"@]+@[^\s<>\"@]+$")


def version():
    return "1.0.0"


def config_schema():
    return {
        "type": "object",
        "title": "Email (SMTP)",
        "required": ["host", "from_address"],
        "additionalProperties": False,
        "properties": {
            "host": {
                "type": "string",
                "pattern": r"^[A-Za-z0-9._:\[\]-]{1,253}$",
                "examples": ["smtp.example.com"],
                "title": "SMTP server",
                "description": "Host name or IP address of the SMTP server (also the name its TLS certificate "
                "must carry).",
            },
            "port": {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "title": "Port",
                "description": "SMTP port. Empty: 587 for starttls, 465 for tls, 25 for none.",
            },
            "security": {
                "enum": list(SECURITY),
                "default": "starttls",
                "title": "Connection security",
                "description": "starttls: plain connection upgraded with STARTTLS, required (submission, usually "
                "port 587); tls: implicit TLS from the first byte (usually port 465); none: no encryption "
                "(only for a relay on a trusted network; the password then travels in clear).",
            },
            "username": {
                "type": "string",
                "maxLength": 320,
                "default": "",
                "title": "Username",
                "description": "SMTP login (AUTH). Empty: send without logging in (a relay that trusts this host).",
            },
            "password": {
                "type": "string",
                "format": "password",
                "maxLength": 1000,
                "default": "",
                "title": "Password",
                "description": "SMTP password (or app password / API key) for the username. Secret.",
            },
            "from_address": {
                "type": "string",
                "minLength": 3,
                "maxLength": 400,
                "pattern": r"^[^\r\n]*@[^\r\n]*$",
                "examples": ["Example Billing <billing@example.com>"],
                "title": "From",
                "description": "Sender, as 'billing@example.com' or 'Example Billing <billing@example.com>'. "
                "The address is also the envelope sender (MAIL FROM); the server may require it to match "
                "the login.",
            },
            "default_recipients": {
                "type": "array",
                "items": {"type": "string", "minLength": 3, "maxLength": 400, "pattern": r"^[^\r\n]*@[^\r\n]*$"},
                "maxItems": 50,
                "default": [],
                "title": "Default recipients",
                "description": "Addresses used when a message names no recipients ('to'), e.g. the operations team.",
            },
            "reply_to": {
                "type": "string",
                "maxLength": 400,
                "pattern": r"^([^\r\n]*@[^\r\n]*)?$",
                "default": "",
                "title": "Reply-To",
                "description": "Optional Reply-To address. Empty: replies go to From.",
            },
            "subject_prefix": {
                "type": "string",
                "maxLength": 100,
                "pattern": r"^[^\r\n]*$",
                "default": "",
                "title": "Subject prefix",
                "description": "Put before every subject, e.g. '[RustBill] '.",
            },
            "timeout": {
                "type": "number",
                "minimum": 1,
                "maximum": 120,
                "default": 20,
                "title": "Timeout (seconds)",
                "description": "Time limit of the whole SMTP session of one send or health check (connect to "
                "QUIT). Keep it below the server's plugin call timeout (30 s by default).",
            },
            "ca_pem": {
                "type": "string",
                "maxLength": 100000,
                "pattern": r"^(\s*-----BEGIN CERTIFICATE-----[\s\S]*)?$",
                "default": "",
                "title": "CA certificate (PEM)",
                "description": "PEM of the certificate authority (or the self-signed certificate) that the server's "
                "certificate must chain to; only it is trusted then. Empty: the system's trusted CAs.",
            },
            "tls_insecure_skip_verify": {
                "type": "boolean",
                "default": False,
                "title": "Do not verify the server's certificate",
                "description": "Accept any certificate and host name (encryption without authentication: anyone "
                "on the path can pose as the server and read the password). Off by default; prefer ca_pem.",
            },
            "helo_hostname": {
                "type": "string",
                "pattern": r"^([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\])?$",
                "default": "",
                "title": "HELO/EHLO name",
                "description": "The name this host gives in EHLO. Empty: the machine's fully qualified name.",
            },
        },
    }


# ---------------------------------------------------------------- configuration


def _address(text: Any, what: str, error: type[sdk.PluginError] = sdk.InvalidArgument) -> tuple[str, str]:
    """``(header form, bare address)`` of ``"Name <a@b>"`` or ``"a@b"``; ``error`` naming ``what``."""
    raw = str(text or "").strip()
    if not raw or "\r" in raw or "\n" in raw:
        raise error(f"{what} {raw[:100]!r} is not an email address")
    name, addr = email.utils.parseaddr(raw)
    if not _ADDRESS_RE.match(addr or ""):
        raise error(f"{what} {raw[:100]!r} is not an email address")
    local, _, domain = addr.rpartition("@")
    try:
        header = str(Address(display_name=name, username=local, domain=domain))
    except (ValueError, IndexError, TypeError):
        raise error(f"{what} {raw[:100]!r} is not an email address") from None
    return header, addr


def _cfg(config: dict[str, Any]) -> dict[str, Any]:
    c = {
        "security": "starttls",
        "username": "",
        "password": "",
        "default_recipients": [],
        "reply_to": "",
        "subject_prefix": "",
        "timeout": 20,
        "ca_pem": "",
        "tls_insecure_skip_verify": False,
        "helo_hostname": "",
        **config,
    }
    if c["security"] not in SECURITY:
        raise sdk.FailedPrecondition(f"security must be one of {', '.join(SECURITY)}")
    c["host"] = str(c.get("host") or "").strip()
    if not c["host"]:
        raise sdk.FailedPrecondition("host is empty")
    c["port"] = int(c.get("port") or DEFAULT_PORTS[c["security"]])
    c["timeout"] = float(c["timeout"])
    c["from_header"], c["from_addr"] = _address(c.get("from_address"), "from_address", sdk.FailedPrecondition)
    c["reply_to_header"] = _address(c["reply_to"], "reply_to", sdk.FailedPrecondition)[0] if c["reply_to"] else ""
    c["where"] = f"{c['host']}:{c['port']}"
    return c


@functools.lru_cache(maxsize=32)
def _tls_context(ca_pem: str, skip_verify: bool) -> ssl.SSLContext:
    """A client TLS context: the system CAs, or only ``ca_pem``; or no verification at all."""
    if ca_pem.strip():
        ctx = ssl.create_default_context(cadata=ca_pem)
    else:
        ctx = ssl.create_default_context()
    if skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _context(c: dict[str, Any]) -> ssl.SSLContext | None:
    if c["security"] == "none":
        return None
    try:
        return await asyncio.to_thread(_tls_context, str(c["ca_pem"]), bool(c["tls_insecure_skip_verify"]))
    except (ssl.SSLError, ValueError) as exc:
        raise sdk.FailedPrecondition(f"ca_pem is not a usable PEM certificate: {exc}") from None


# ---------------------------------------------------------------- errors


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 5:
        if isinstance(e, ssl.SSLError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _tls_error(c: dict[str, Any], err: ssl.SSLError, step: str) -> sdk.PluginError:
    if isinstance(err, ssl.SSLCertVerificationError):
        why = err.verify_message or err.reason or str(err)
        hint = "set ca_pem to the CA that signed it" if not c["ca_pem"] else "ca_pem is not the CA that signed it"
        return sdk.FailedPrecondition(
            f"{step} with {c['where']} failed: the server's certificate is not trusted ({why}); {hint}"
        )
    hint = {
        "tls": "is this port implicit TLS? Submission on 587 needs security=starttls",
        "starttls": "the server's TLS setup failed",
    }.get(c["security"], "")
    return sdk.FailedPrecondition(f"{step} with {c['where']} failed: {err.reason or err}; {hint}")


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    said = re.sub(r"\s+", " ", str(exc.message)).strip()[:300]
    return f"{exc.code} {said}"


def _map(c: dict[str, Any], phase: str, exc: BaseException) -> sdk.PluginError:
    """What went wrong, for the caller. ``phase``: connect, starttls, login, noop, send."""
    where = c["where"]
    tls = _ssl_cause(exc)
    if tls is not None and phase in ("connect", "starttls"):
        return _tls_error(c, tls, "TLS handshake" if phase == "connect" else "STARTTLS")
    if isinstance(exc, (TimeoutError, aiosmtplib.SMTPTimeoutError)):
        if phase == "send":
            return sdk.DeadlineExceeded(
                f"SMTP server {where} did not answer within {c['timeout']:g}s while the message was being sent: "
                "it may have been accepted"
            )
        step = {"connect": "connecting", "starttls": "STARTTLS", "login": "login", "noop": "NOOP"}[phase]
        return sdk.Unavailable(f"SMTP server {where} did not answer within {c['timeout']:g}s ({step})")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return sdk.PermissionDenied(f"SMTP login refused for user {c['username']!r} by {where}: {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = ", ".join(f"{r.recipient} ({_reply(r)})" for r in exc.recipients)
        if all(400 <= r.code < 500 for r in exc.recipients):
            return sdk.Unavailable(f"SMTP server {where} temporarily refused every recipient: {refused}")
        return sdk.InvalidArgument(f"SMTP server {where} refused every recipient: {refused}")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        if 400 <= exc.code < 500:
            return sdk.Unavailable(f"SMTP server {where} temporarily refused sender {exc.sender}: {_reply(exc)}")
        return sdk.FailedPrecondition(
            f"SMTP server {where} refused sender {exc.sender}: {_reply(exc)} (may this login send as from_address?)"
        )
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return sdk.Unavailable(f"SMTP server {where} refused the connection: {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        what = {"send": "refused the message", "noop": "failed NOOP"}.get(phase, f"failed {phase}")
        if 400 <= exc.code < 500:
            return sdk.Unavailable(f"SMTP server {where} {what} (temporary): {_reply(exc)}")
        return sdk.FailedPrecondition(f"SMTP server {where} {what}: {_reply(exc)}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return sdk.InvalidArgument(f"SMTP server {where}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        if phase == "send":
            return sdk.Unavailable(f"SMTP server {where} closed the connection while the message was being sent: {exc}")
        return sdk.Unavailable(f"SMTP server {where} closed the connection ({phase}): {exc}")
    if isinstance(exc, (aiosmtplib.SMTPConnectError, OSError)):
        return sdk.Unavailable(f"cannot connect to SMTP server {where}: {exc}")
    if isinstance(exc, aiosmtplib.SMTPException):
        text = str(exc)
        if phase == "starttls" and "STARTTLS" in text:
            return sdk.FailedPrecondition(
                f"SMTP server {where} does not offer STARTTLS; use security=tls (implicit TLS, usually port 465), "
                "or none on a trusted network"
            )
        if phase == "login" and "AUTH" in text:
            hint = (
                " on an unencrypted connection (many servers offer it only after STARTTLS: use security=starttls)"
                if c["security"] == "none"
                else ""
            )
            return sdk.FailedPrecondition(
                f"SMTP server {where} does not offer AUTH{hint}; leave username empty to send without login"
            )
        return sdk.FailedPrecondition(f"SMTP {phase} with {where} failed: {text}")
    if isinstance(exc, ValueError):
        return sdk.InvalidArgument(f"cannot send to {where}: {exc}")
    return sdk.PluginError(f"SMTP {phase} with {where} failed: {type(exc).__name__}: {exc}", "INTERNAL")


class _Session:
    """One SMTP session; ``step`` names the phase an error happened in."""

    def __init__(self, c: dict[str, Any]) -> None:
        self.c = c
        self.step = "connect"
        self.smtp: aiosmtplib.SMTP | None = None

    async def open(self) -> aiosmtplib.SMTP:
        c = self.c
        ctx = await _context(c)
        smtp = aiosmtplib.SMTP(
            hostname=c["host"],
            port=c["port"],
            use_tls=c["security"] == "tls",
            start_tls=False,
            tls_context=ctx,
            timeout=c["timeout"],
            local_hostname=c["helo_hostname"] or None,
        )
        self.smtp = smtp
        self.step = "connect"
        await smtp.connect()
        if c["security"] == "starttls":
            self.step = "starttls"
            await smtp.starttls(tls_context=ctx)
        if c["username"]:
            self.step = "login"
            await smtp.login(c["username"], str(c["password"]))
        return smtp

    async def quit(self) -> None:
        """QUIT after a session that went well (a failed QUIT changes nothing: the work is done)."""
        smtp = self.smtp
        if smtp is not None and smtp.is_connected:
            try:
                await asyncio.wait_for(smtp.quit(), timeout=min(self.c["timeout"], 5))
            except Exception:
                pass

    def close(self) -> None:
        if self.smtp is not None:
            self.smtp.close()


# ---------------------------------------------------------------- the message


class _Text(HTMLParser):
    """Plain text of an HTML body (for the text/plain part when only HTML was given)."""

    _BLOCK = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        lines = [re.sub(r"[ \t]+", " ", line).strip() for line in "".join(self.parts).splitlines()]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(markup: str) -> str:
    p = _Text()
    p.feed(markup)
    p.close()
    return p.text()


def message_id(msg_id: str, from_addr: str) -> str:
    """``<rustbill.<id>@<sender's domain>>``: the same message id always gives the same Message-ID."""
    domain = from_addr.rpartition("@")[2] or "rustbill.invalid"
    local = re.sub(r"[^A-Za-z0-9_-]", "-", msg_id)[:120]
    if local != msg_id or not local:
        local = f"{local}.{hashlib.sha256(msg_id.encode()).hexdigest()[:12]}".lstrip(".")
    return f"<rustbill.{local}@{domain}>"


def recipients(c: dict[str, Any], to: Any) -> list[tuple[str, str]]:
    if isinstance(to, str):
        to = [t for t in re.split(r"[,;]", to) if t.strip()]
    given = [str(t) for t in (to or [])]
    chosen = given or [str(t) for t in c["default_recipients"]]
    if not chosen:
        raise sdk.InvalidArgument("no recipients: the message has no 'to' and default_recipients is empty")
    if len(chosen) > 100:
        raise sdk.InvalidArgument(f"{len(chosen)} recipients; at most 100 per message")
    out: list[tuple[str, str]] = []
    for t in chosen:
        pair = _address(t, "recipient")
        if pair[1].lower() not in {a.lower() for _, a in out}:
            out.append(pair)
    return out


def build(c: dict[str, Any], message: dict[str, Any]) -> tuple[EmailMessage, list[str]]:
    """The EmailMessage for ``message`` and the bare recipient addresses."""
    rcpts = recipients(c, message.get("to"))
    subject = re.sub(r"\s+", " ", str(message.get("subject") or message.get("event") or "Notification")).strip()
    text = str(message.get("text") or "")
    markup = str(message.get("html") or "")
    if not text:
        if markup:
            text = html_to_text(markup)
        elif message.get("data"):
            text = json.dumps(message["data"], ensure_ascii=False, indent=2, sort_keys=True, default=str)
        else:
            text = subject
    msg = EmailMessage()
    msg["From"] = c["from_header"]
    msg["To"] = ", ".join(h for h, _ in rcpts)
    msg["Subject"] = (str(c["subject_prefix"]) + subject)[:900]
    msg["Date"] = email.utils.format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id(str(message.get("id") or ""), c["from_addr"])
    if c["reply_to_header"]:
        msg["Reply-To"] = c["reply_to_header"]
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    event = re.sub(r"[^\x21-\x7e]", "", str(message.get("event") or ""))[:200]
    if event:
        msg["X-RustBill-Event"] = event
    msg.set_content(text if text.endswith("\n") else text + "\n")
    if markup:
        msg.add_alternative(markup, subtype="html")
    return msg, [a for _, a in rcpts]


# ---------------------------------------------------------------- sending


async def _send(c: dict[str, Any], msg: EmailMessage, rcpts: list[str]) -> dict[str, Any]:
    start = time.monotonic()
    session = _Session(c)
    try:
        try:
            async with asyncio.timeout(c["timeout"]):
                smtp = await session.open()
                session.step = "send"
                refused, _reply_text = await smtp.send_message(msg, sender=c["from_addr"], recipients=rcpts)
        except sdk.PluginError:
            raise
        except Exception as exc:
            raise _map(c, session.step, exc) from None
        await session.quit()  # the message is accepted: QUIT is a courtesy, bounded and never an error
    finally:
        session.close()
    bad = {addr: f"{r.code} {r.message}" for addr, r in refused.items()}
    return {
        "message_id": msg["Message-ID"],
        "to": rcpts,
        "refused": bad,
        "duration_ms": round((time.monotonic() - start) * 1000),
    }


async def _send_recorded(c: dict[str, Any], message: dict[str, Any], kind: str) -> dict[str, Any]:
    msg, rcpts = build(c, message)  # a message that cannot be built is the caller's error: not recorded
    entry: dict[str, Any] = {"kind": kind, "id": str(message.get("id") or ""), "subject": str(msg["Subject"])}
    try:
        out = await _send(c, msg, rcpts)
    except sdk.PluginError as exc:
        await sdk.record_recent({**entry, "delivered": False, "error": exc.message, "to": rcpts}, keep=_RECENT)
        raise
    error = "; ".join(f"refused {a}: {r}" for a, r in out["refused"].items())
    await sdk.record_recent(
        {**entry, "delivered": True, "to": out["to"], "message_id": out["message_id"], "error": error}, keep=_RECENT
    )
    return out


# ---------------------------------------------------------------- contract


async def send(config, message):
    c = _cfg(config)
    out = await _send_recorded(c, message, "send")
    error = ""
    if out["refused"]:
        error = "some recipients were refused: " + ", ".join(f"{a} ({r})" for a, r in out["refused"].items())
    return {"delivered": True, "id": out["message_id"], "error": error}


async def health_check(config):
    try:
        c = _cfg(config)
    except sdk.PluginError as exc:
        return exc.message
    session = _Session(c)
    try:
        async with asyncio.timeout(c["timeout"]):
            smtp = await session.open()
            session.step = "noop"
            await smtp.noop()
        await session.quit()
    except sdk.PluginError as exc:
        return exc.message
    except Exception as exc:
        return _map(c, session.step, exc).message
    finally:
        session.close()
    return None


async def admin_send_test(config):
    """Send a test email to ``to`` (an address, a comma-separated list or a list; default: the
    default recipients) and return what the server accepted."""
    c = _cfg(config)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    msg = {
        "id": f"test-{int(time.time() * 1000)}",
        "event": "test",
        "subject": "RustBill test email",
        "text": f"This is a test email from RustBill, sent at {stamp} through {c['where']}.",
        "html": f"<p>This is a <b>test email</b> from RustBill, sent at {html.escape(stamp)} "
        f"through <code>{html.escape(c['where'])}</code>.</p>",
        "to": config.get("to") or [],
    }
    out = await _send_recorded(c, msg, "test")
    return {"delivered": True, **out}


async def admin_recent(config):
    """The last sends recorded for this interface, newest first."""
    return {"recent": await sdk.recent()}


# The admin console shows the page in a sandboxed iframe; sdk.admin_bridge_script() lets it run
# this interface's admin_* actions (docs/plugins.md, "Admin pages and the console bridge").
_PAGE_SCRIPT = """<script>
rustbill.bind("send-test", "admin_send_test", function (f) {
  var to = f.elements.to.value.trim();
  return to ? {to: to} : {};
}, "test-out");
</script>"""


async def admin_page(config):
    e = html.escape
    try:
        c = _cfg(config)
        problem = ""
    except sdk.PluginError as exc:
        c = {**config, "where": f"{config.get('host', '')}:{config.get('port', '')}"}
        problem = f'<p class="error">Configuration problem: {e(exc.message)}</p>'
    if c.get("security") == "none":
        verify = "no TLS"
    elif c.get("tls_insecure_skip_verify"):
        verify = "NOT verified (tls_insecure_skip_verify)"
    else:
        verify = "verified against ca_pem" if c.get("ca_pem") else "verified against the system's CAs"
    rows = [
        ("Server", c.get("where", "")),
        ("Security", str(c.get("security", "starttls"))),
        ("Server certificate", verify),
        (
            "Login",
            f"{c.get('username')} (password {'set' if c.get('password') else 'empty'})"
            if c.get("username")
            else "none",
        ),
        ("From", str(c.get("from_address", ""))),
        ("Default recipients", ", ".join(str(r) for r in c.get("default_recipients") or []) or "none"),
        ("Reply-To", str(c.get("reply_to") or "—")),
        ("Subject prefix", str(c.get("subject_prefix") or "—")),
        ("Timeout", f"{float(c.get('timeout', 20)):g} s"),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    recent = (await admin_recent(config))["recent"]
    lines = "".join(
        f"<tr><td>{e(str(r.get('at', '')))}</td><td>{e(str(r.get('kind', '')))}</td>"
        f"<td>{e(', '.join(str(t) for t in r.get('to') or []))}</td><td>{e(str(r.get('subject', '')))}</td>"
        f'<td class="{"ok" if r.get("delivered") else "error"}">{"sent" if r.get("delivered") else "failed"}</td>'
        f"<td>{e(str(r.get('error', '')))}</td></tr>"
        for r in recent
        if isinstance(r, dict)
    )
    sends = (
        "<table><tr><th>When (UTC)</th><th>Kind</th><th>To</th><th>Subject</th><th>Outcome</th><th>Error</th></tr>"
        f"{lines}</table>"
        if lines
        else "<p>No sends recorded yet.</p>"
    )
    parts = [
        f"{problem}<table>{table}</table>",
        '<h2>Send a test email</h2><form id="send-test"><input name="to" size="40" placeholder="Recipient (empty: '
        'the default recipients)"> <button type="submit">Send test email</button></form><pre id="test-out"></pre>',
        f"<h2>Last sends</h2><p>The last {_RECENT} sends and tests of this interface, kept in the interface's "
        f"state (best effort).</p>{sends}",
    ]
    body = sdk.admin_html("Email (SMTP)", "Email (SMTP)", parts, sdk.admin_bridge_script() + _PAGE_SCRIPT)
    return {"title": "Email (SMTP)", "html": body}
