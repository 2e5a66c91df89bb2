"""incus — first-party provider: opens containers and virtual machines on an Incus server through the
Incus REST API (https://linuxcontainers.org/incus/docs/main/rest-api/).

- Transport: HTTPS (``url``, usually ``https://host:8443``) with a TLS client certificate that the
  server trusts (TLS 1.3, as Incus requires), or the local unix socket (``socket_path``), where the
  Incus daemon trusts every local client that may open the socket.
- ``create_instance``: ``POST /1.0/instances`` (a background operation; waited for with
  ``GET /1.0/operations/{id}/wait?timeout=N``) with ``limits.cpu``, ``limits.memory`` and the root
  disk size from the ServerSpec, the image mapped from the spec's ``os``, and a NIC with
  ``limits.ingress``/``limits.egress`` for the bandwidth. The instance name is derived from the
  host's ``request_id``, so a retry with the same request finds the instance it already made.
- ``find_instance`` (the host settling an order whose outcome is unknown): the instance named after
  the ``request_id`` if its ``user.rustbill.request_id`` is that request, else None; a create
  operation still running on it is waited for first.
- ``get_instance_status``: ``GET /1.0/instances/{name}/state``; ``sync_upstream_instances``:
  ``GET /1.0/instances?recursion=2`` (instances with their state).
- ``query_price``/``sync_products``/``spec_template`` come from the price rules and plans in the
  config (decimal strings, never floats).
- ``health_check``: ``GET /1.0`` must say ``auth: trusted`` and ``api_version: 1.0``; then the
  configured project, storage pool and profiles must exist.
- ``admin_page`` lists the project's instances; ``admin_start``/``admin_stop``/``admin_restart``/
  ``admin_delete`` change one (``{"name": ...}``), waiting for Incus's operation.

See docs/builtin/incus.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import math
import os
import re
import shutil
import ssl
import tempfile
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from rustbill import sdk

PLUGIN_TYPE = "first_party_provider"

log = sdk.logger(__name__)

_PEM_CERT = r"^\s*-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\s*$"
_PEM_KEY = r"^\s*-----BEGIN ([A-Z]+ )?PRIVATE KEY-----[\s\S]+-----END ([A-Z]+ )?PRIVATE KEY-----\s*$"
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_OP_PATH_RE = re.compile(r"^/1\.0/operations/[A-Za-z0-9-]{1,100}$")
_FINAL_OK, _FINAL_FAILED, _FINAL_CANCELLED = 200, 400, 401

_IMAGE_SERVER = {"server": "https://images.linuxcontainers.org", "protocol": "simplestreams"}
DEFAULT_IMAGES = {
    "debian-12": {"alias": "debian/12", **_IMAGE_SERVER},
    "ubuntu-24.04": {"alias": "ubuntu/24.04", **_IMAGE_SERVER},
}
# What an interface's config means when a key is left out (the schema below shows the same defaults).
DEFAULTS: dict[str, Any] = {
    "url": "", "socket_path": "", "client_cert": "", "client_key": "", "server_cert": "", "tls_server_name": "",
    "insecure_skip_verify": False, "project": "default", "storage_pool": "default", "profiles": ["default"],
    "network": "incusbr0", "nic_name": "eth0", "instance_type": "container", "name_prefix": "rb-",
    "images": DEFAULT_IMAGES, "default_os": "", "start_on_create": True, "operation_timeout_seconds": 20,
    "request_timeout_seconds": 10, **sdk.PRICING_DEFAULTS,
}  # fmt: skip


# Price rules, plans, regions, OS images and spec limits: docs/plugins.md, "Selling servers".
PRICING = sdk.ServerPricing(DEFAULTS, unit="instance", cpu="CPU core", disk="root disk")


def version():
    return "1.1.0"


def config_schema():
    # One property a line or two (fmt: skip keeps them so): the descriptions are what the console shows.
    p, name = sdk.prop, r"^[A-Za-z0-9._-]{1,63}$"
    image = sdk.object_schema("Image source", "Where the image for this OS comes from (InstanceSource of type "
                              "image).", {
        "alias": p("string", "Image alias", "Image alias, e.g. debian/12.", minLength=1),
        "fingerprint": p("string", "Image fingerprint", "Image fingerprint (instead of an alias).",
                         pattern=r"^[0-9a-f]{12,64}$"),
        "server": p("string", "Image server", "Remote image server URL, e.g. https://images.linuxcontainers.org. "
                    "Empty: the server's local images.", pattern=r"^(https://\S+)?$"),
        "protocol": p("string", "Image server protocol", "simplestreams (default when a server is given), incus or "
                      "oci.", enum=["simplestreams", "incus", "oci"]),
        "instance_type": p("string", "Instance type for this OS", "Overrides the interface's instance_type for this "
                           "OS (e.g. an OS only offered as a VM).", enum=["container", "virtual-machine"]),
    }, anyOf=[{"required": ["alias"]}, {"required": ["fingerprint"]}])  # fmt: skip
    region = sdk.region_schema(
        "A region customers may choose.",
        target=p("string", "Cluster member or group", "Incus 'target' for instances in this region (a cluster member, "
                 "or @group). Empty: the server chooses.", pattern=r"^[A-Za-z0-9@._-]{0,100}$"),
        price_extra=sdk.money_prop("Surcharge", "Added to the monthly price in this region."),
    )  # fmt: skip
    return {
        "type": "object",
        "title": "Incus",
        "description": "An Incus server reached over HTTPS with a trusted TLS client certificate, or over its "
        "local unix socket. Give url or socket_path.",
        "additionalProperties": False,
        "anyOf": [{"required": ["url"]}, {"required": ["socket_path"]}],
        "if": {"required": ["url"], "properties": {"url": {"minLength": 1}}},
        "then": {"required": ["client_cert", "client_key"]},
        "properties": {
            "url": p("string", "Server URL", "https://host:8443 — the Incus API over HTTPS (core.https_address). "
                     "Leave empty when socket_path is used.", pattern=r"^(https://[^\s/?#]+)?/?$"),
            "socket_path": p("string", "Unix socket", "Path of the local Incus socket, e.g. /var/lib/incus/unix.socket "
                             "(some distributions: /run/incus/unix.socket). Used instead of url; no certificate is "
                             "needed.", pattern=r"^(/\S{1,200})?$", examples=["/var/lib/incus/unix.socket"]),
            "client_cert": p("string", "Client certificate (PEM)", "The TLS client certificate Incus trusts (incus "
                             "config trust add-certificate).", pattern=_PEM_CERT),
            "client_key": p("string", "Client key (PEM)", "The unencrypted private key of the client certificate. "
                            "Secret.", format="password", pattern=_PEM_KEY),
            "server_cert": p("string", "Server certificate (PEM)", "The Incus server's certificate "
                             "(/var/lib/incus/server.crt) or the CA that issued it; the server must present it (or a "
                             "certificate it issued). Empty: the system CA store.",
                             pattern=r"^(\s*-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----\s*)?$"),
            "tls_server_name": p("string", "TLS server name", "With server_cert: also check that the server's "
                                 "certificate is for this name (and send it as SNI). Empty: the pinned certificate "
                                 "alone is checked, as the incus client does.", pattern=r"^[A-Za-z0-9.-]{0,253}$"),
            "insecure_skip_verify": p("boolean", "Skip server verification (insecure)", "Accept any server "
                                      "certificate. Only for tests; anyone on the path can then impersonate the "
                                      "server.", default=False),
            "project": p("string", "Project", "Incus project of the instances.", pattern=name, default="default"),
            "storage_pool": p("string", "Storage pool", "Pool of the root disk.", pattern=name, default="default"),
            "profiles": p("array", "Profiles", "Profiles applied to new instances.",
                          items={"type": "string", "pattern": name}, default=["default"]),
            "network": p("string", "Network for the NIC", "Managed network of the NIC that carries the bandwidth "
                         "limits (limits.ingress/egress). Empty: the profiles' NIC is used and bandwidth is not "
                         "limited.", pattern=r"^[A-Za-z0-9._-]{0,63}$", default="incusbr0"),
            "nic_name": p("string", "NIC device name", "Device name of that NIC (replaces the profile's device of the "
                          "same name).", pattern=name, default="eth0"),
            "instance_type": p("string", "Instance type", "container or virtual-machine.",
                               enum=["container", "virtual-machine"], default="container"),
            "name_prefix": p("string", "Instance name prefix", "New instances are named prefix + the order's request "
                             "id.", pattern=r"^[a-z][a-z0-9-]{0,19}$", default="rb-"),
            **PRICING.images_properties(image, "OS name (the ServerSpec's os) → image source. Default: debian-12 and "
                                        "ubuntu-24.04 from images.linuxcontainers.org.", minProperties=1),
            "start_on_create": p("boolean", "Start on create", "Start new instances.", default=True),
            "operation_timeout_seconds": p("integer", "Operation timeout (s)", "How long to wait for an Incus "
                                           "background operation (create, start, stop, delete). Keep it below the "
                                           "host's create_instance call timeout.", minimum=1, maximum=3600, default=20),
            "request_timeout_seconds": p("number", "Request timeout (s)", "Timeout of each ordinary API request.",
                                         minimum=1, maximum=300, default=10),
            **PRICING.properties(region),
        },
    }  # fmt: skip


def _cfg(config: dict[str, Any], key: str) -> Any:
    return sdk.setting(config, DEFAULTS, key)


# ---------------------------------------------------------------- connection


class _Conn:
    """One configured way to reach an Incus server: an httpx client and what to call it in messages."""

    __slots__ = ("base", "client", "extensions", "fingerprint", "loop", "request_timeout", "where")

    def __init__(
        self, client: httpx.AsyncClient, base: str, where: str, fingerprint: str, sni: str, request_timeout: float
    ) -> None:
        self.client = client
        self.base = base
        self.where = where
        self.fingerprint = fingerprint
        self.extensions = {"sni_hostname": sni} if sni else {}
        self.loop = asyncio.get_running_loop()
        self.request_timeout = request_timeout


_CONNS: sdk.Connections[_Conn] = sdk.Connections(16)


def _first_cert_der(pem: str) -> bytes:
    m = re.search(r"-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----", pem)
    try:
        return ssl.PEM_cert_to_DER_cert(m.group(0) if m else "")  # "": ValueError, as for a broken one
    except ValueError:
        raise sdk.InvalidArgument("client_cert is not a PEM certificate") from None


def _ssl_context(config: dict[str, Any]) -> tuple[ssl.SSLContext, str]:
    cert, key = str(_cfg(config, "client_cert")).strip(), str(_cfg(config, "client_key")).strip()
    if not cert or not key:
        raise sdk.InvalidArgument("client_cert and client_key are required to reach Incus over HTTPS")
    fingerprint = hashlib.sha256(_first_cert_der(cert)).hexdigest()
    server_cert = str(_cfg(config, "server_cert")).strip()
    server_name = str(_cfg(config, "tls_server_name")).strip()
    if _cfg(config, "insecure_skip_verify"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif server_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cadata=server_cert)
        except (ssl.SSLError, ValueError):
            raise sdk.InvalidArgument("server_cert is not a PEM certificate") from None
        # The pinned certificate is a trust anchor even when it is not a CA (Incus's self-signed server.crt).
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        ctx.check_hostname = bool(server_name)
    else:
        ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3  # Incus speaks TLS 1.3 only
    tmp = tempfile.mkdtemp(prefix="rustbill-incus-")  # mode 0700
    try:
        paths = []
        for name, data in (("client.crt", cert), ("client.key", key)):
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(data + "\n")
            paths.append(path)

        def no_password() -> str:
            raise ValueError("encrypted")

        try:
            ctx.load_cert_chain(paths[0], paths[1], password=no_password)
        except ValueError:
            raise sdk.InvalidArgument("client_key is encrypted; give the unencrypted key") from None
        except ssl.SSLError as exc:
            why = "the key does not match the certificate" if "MISMATCH" in str(exc).upper() else "not valid PEM"
            raise sdk.InvalidArgument(f"client_cert/client_key cannot be used: {why}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ctx, fingerprint


def _conn(config: dict[str, Any]) -> _Conn:
    url = str(_cfg(config, "url")).strip().rstrip("/")
    sock = str(_cfg(config, "socket_path")).strip()
    if bool(url) == bool(sock):
        raise sdk.InvalidArgument("configure exactly one of url (https://host:8443) and socket_path")
    if url and not re.match(r"^https://[^\s/?#]+$", url):
        raise sdk.InvalidArgument("url must look like https://host:8443")
    timeout = float(_cfg(config, "request_timeout_seconds"))
    material = [url, sock, timeout]
    if url:
        material += [config.get(k) for k in ("client_cert", "client_key", "server_cert", "tls_server_name")]
        material.append(bool(_cfg(config, "insecure_skip_verify")))
    key = _CONNS.key(*material)
    loop = asyncio.get_running_loop()
    conn = _CONNS.get(key)
    if conn is not None and conn.loop is loop and not conn.client.is_closed:
        return conn
    limits = httpx.Limits(max_connections=20, max_keepalive_connections=5)
    http_timeout = httpx.Timeout(timeout, connect=min(timeout, 5.0))
    if url:
        ctx, fingerprint = _ssl_context(config)
        transport = httpx.AsyncHTTPTransport(verify=ctx, limits=limits, retries=0)
        sni = str(_cfg(config, "tls_server_name")).strip() if _cfg(config, "server_cert") else ""
        client = httpx.AsyncClient(transport=transport, timeout=http_timeout, follow_redirects=False)
        conn = _Conn(client, url, f"Incus at {url}", fingerprint, sni, timeout)
    else:
        transport = httpx.AsyncHTTPTransport(uds=sock, limits=limits, retries=0)
        client = httpx.AsyncClient(transport=transport, timeout=http_timeout, follow_redirects=False)
        conn = _Conn(client, "http://incus.socket", f"Incus on unix socket {sock}", "", "", timeout)
    for c in _CONNS.put(key, conn):  # the one it replaces, and the least recently used
        if c.loop is loop and not c.client.is_closed:
            # closed later, so that calls still using it can finish
            loop.call_later(3700, lambda client=c.client: asyncio.ensure_future(client.aclose()))
    return conn


async def _aclose_all() -> None:
    """Close every cached client of the running loop (for tests and orderly shutdowns)."""
    loop = asyncio.get_running_loop()
    for key, conn in _CONNS.items():
        if conn.loop is loop:
            _CONNS.discard(key, conn)
            await conn.client.aclose()


def _cause(exc: BaseException, kind: type[BaseException]) -> Any:
    """The first exception of ``kind`` in ``exc``'s chain (causes and contexts)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        stack += [e.__cause__, e.__context__]
    return None


# OpenSSL's words for: the server does not speak TLS 1.3; the server refused our client certificate.
_NOT_TLS13 = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE", "WRONG_VERSION_NUMBER",
              "VERSION TOO LOW")  # fmt: skip
_CERT_REFUSED = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN", "ACCESS_DENIED",
                 "HANDSHAKE_FAILURE", "DECRYPT_ERROR", "CERTIFICATE_REVOKED", "CERTIFICATE_EXPIRED")  # fmt: skip


def _transport_error(conn: _Conn, exc: Exception) -> sdk.PluginError:
    """A clear status for a failure below HTTP: TLS problems are named as such."""
    # first: a timeout's chain may hold an SSLWantReadError from the TLS layer, which is no TLS problem
    if isinstance(exc, httpx.ConnectTimeout):
        return sdk.Unavailable(f"cannot reach {conn.where}: no connection within {min(conn.request_timeout, 5.0):g}s")
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return sdk.PluginError(
            f"{conn.where} did not answer within the request timeout ({conn.request_timeout:g}s)", "DEADLINE_EXCEEDED"
        )
    err = _cause(exc, ssl.SSLError)
    text = str(err or exc)
    upper = text.upper()
    if isinstance(err, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in upper:
        detail = getattr(err, "verify_message", "") or text
        if "hostname mismatch" in detail.lower():
            return sdk.FailedPrecondition(
                f"TLS error: the certificate of {conn.where} is not valid for the configured tls_server_name ({detail})"
            )
        return sdk.FailedPrecondition(
            f"TLS error: the certificate of {conn.where} is not the one configured ({detail}); set server_cert to "
            "the server's certificate (/var/lib/incus/server.crt) or the CA that issued it"
        )
    if any(s in upper for s in _NOT_TLS13):
        return sdk.FailedPrecondition(
            f"TLS error: {conn.where} does not speak TLS 1.3, which Incus requires ({text}); is this an "
            "Incus API endpoint?"
        )
    if any(s in upper for s in _CERT_REFUSED):
        return sdk.PermissionDenied(
            f"TLS error: {conn.where} rejected the client certificate (SHA-256 fingerprint {conn.fingerprint}) "
            f"during the handshake ({text})"
        )
    if isinstance(err, (ssl.SSLWantReadError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        # The server's alert can be lost when it closes the connection (TCP reset) before we read it.
        return sdk.Unavailable(
            f"TLS error: {conn.where} closed the connection right after the TLS handshake ({text}); with TLS 1.3 "
            f"this is how a server refuses a client certificate it does not accept: check that client_cert (SHA-256 "
            f"fingerprint {conn.fingerprint}) is issued and trusted for this server"
        )
    if err is not None:
        return sdk.Unavailable(f"TLS error talking to {conn.where}: {text}")
    if _cause(exc, ConnectionRefusedError) is not None:
        return sdk.Unavailable(f"cannot reach {conn.where}: connection refused (is Incus listening there?)")
    if _cause(exc, FileNotFoundError) is not None:
        return sdk.Unavailable(f"cannot reach {conn.where}: the socket does not exist")
    if _cause(exc, PermissionError) is not None:
        return sdk.PermissionDenied(f"cannot open {conn.where}: permission denied (join the incus-admin group?)")
    reason = text or type(exc).__name__
    return sdk.Unavailable(f"cannot reach {conn.where}: {type(exc).__name__}: {reason}")


def _api_error(conn: _Conn, status: int, data: Any, what: str) -> sdk.PluginError:
    data = data if isinstance(data, dict) else {}
    message = str(data.get("error") or "") or f"HTTP {status}"
    error_code = data.get("error_code")  # the error's own status, when the envelope gives one
    code = error_code if isinstance(error_code, int) and error_code >= 400 else status
    if code in (401, 403):
        return sdk.PermissionDenied(
            f"{what}: {conn.where} refused the request ({code} {message}): the client certificate (SHA-256 "
            f"fingerprint {conn.fingerprint or '-'}) is not trusted or not allowed in this project; add it with "
            "`incus config trust add-certificate`"
        )
    if code == 404:
        return sdk.NotFound(f"{what}: {message}")
    if code == 409:
        return sdk.AlreadyExists(f"{what}: {message}")
    if code >= 500:
        return sdk.Unavailable(f"{what}: {conn.where} failed ({code}): {message}")
    return sdk.FailedPrecondition(f"{what}: Incus refused ({code}): {message}")


async def _call(
    conn: _Conn,
    method: str,
    path: str,
    what: str,
    *,
    params: dict[str, Any] | None = None,
    body: Any = None,
    read_timeout: float | None = None,
) -> dict[str, Any]:
    """One request; returns the sync or async envelope, raises a PluginError for anything else."""
    kwargs: dict[str, Any] = {"params": params or None, "extensions": conn.extensions}
    if body is not None:
        kwargs["json"] = body
    if read_timeout is not None:
        kwargs["timeout"] = httpx.Timeout(read_timeout, connect=min(conn.request_timeout, 5.0))
    try:
        resp = await conn.client.request(method, conn.base + path, **kwargs)
    except (httpx.TransportError, OSError) as exc:  # ssl.SSLError is an OSError, and may arrive unwrapped
        raise _transport_error(conn, exc) from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") not in ("sync", "async", "error"):
        ctype = resp.headers.get("content-type", "no content type")
        raise sdk.FailedPrecondition(
            f"{what}: {conn.where} did not answer with an Incus REST API response (HTTP {resp.status_code}, "
            f"{ctype}); is this an Incus server?"
        )
    if data["type"] == "error" or resp.status_code >= 400:
        raise _api_error(conn, resp.status_code, data, what)
    if data["type"] == "async":
        op = data.get("operation") or resp.headers.get("location") or ""
        data["operation"] = op
    return data


async def _get(conn: _Conn, path: str, what: str, params: dict[str, Any] | None = None) -> Any:
    data = await _call(conn, "GET", path, what, params=params)
    return data.get("metadata")


async def _run(conn: _Conn, method: str, path: str, what: str, timeout_s: int, **request: Any) -> dict[str, Any]:
    """A request (``params``, ``body``: as ``_call``'s) that starts a background operation, waited for
    until it ends (or ``timeout_s``)."""
    data = await _call(conn, method, path, what, **request)
    if data["type"] == "sync":
        return data.get("metadata") or {}
    op = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    op_path = str(data.get("operation") or "")
    if not _OP_PATH_RE.match(op_path) and op.get("id"):
        op_path = f"/1.0/operations/{op['id']}"
    if not _OP_PATH_RE.match(op_path):
        raise sdk.FailedPrecondition(f"{what}: Incus answered 202 without an operation URL")
    return await _wait(conn, op_path, op, what, timeout_s)


async def _wait(conn: _Conn, op_path: str, op: dict[str, Any], what: str, timeout_s: int) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        code = op.get("status_code")
        if code == _FINAL_OK:
            return op
        if code == _FINAL_FAILED:
            raise sdk.FailedPrecondition(f"{what} failed at Incus: {op.get('err') or 'operation failed'}")
        if code == _FINAL_CANCELLED:
            raise sdk.PluginError(f"{what} was cancelled at Incus: {op.get('err') or 'cancelled'}", "ABORTED")
        left = deadline - time.monotonic()
        if left <= 0:
            raise sdk.PluginError(
                f"{what} did not finish within {timeout_s}s (Incus operation {op_path.rsplit('/', 1)[-1]} is still "
                f"{str(op.get('status') or 'running').lower()})",
                "DEADLINE_EXCEEDED",
            )
        n = max(1, math.ceil(left))
        started = time.monotonic()
        data = await _call(
            conn, "GET", op_path + "/wait", what, params={"timeout": n}, read_timeout=n + conn.request_timeout
        )
        op = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        if op.get("status_code") not in (_FINAL_OK, _FINAL_FAILED, _FINAL_CANCELLED) and (
            time.monotonic() - started < 0.5
        ):
            await asyncio.sleep(0.2)  # a server that answers at once: do not spin


# ---------------------------------------------------------------- helpers


def _name(value: Any, what: str = "name") -> str:
    name = str(value or "").strip()
    if not _NAME_RE.match(name) or name.isdigit():
        raise sdk.InvalidArgument(f"{what} {name[:80]!r} is not a valid Incus instance name")
    return name


def _inst_path(name: str, suffix: str = "") -> str:
    return f"/1.0/instances/{quote(name, safe='')}{suffix}"


def _params(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"project": _cfg(config, "project"), **extra}


def _instance_name(config: dict[str, Any], request_id: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", request_id.lower()).strip("-")
    name = sdk.order_name(str(_cfg(config, "name_prefix")), slug, request_id, max_length=63, valid=_NAME_RE)
    return _name(name, "instance name")


def _created_at(value: Any) -> str:
    """An RFC 3339 UTC time ("...Z") from Incus's timestamps (nanoseconds, offsets); "" when unset."""
    text = str(value or "")
    if not text or text.startswith("0001-01-01"):
        return ""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        return text
    frac = (m.group(2) or "")[:7]
    try:
        dt = datetime.fromisoformat(m.group(1) + frac + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    except ValueError:
        return text
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item_state(item: dict[str, Any]) -> dict[str, Any]:
    """The state of an instance of a listing: with recursion=2 its state, else only its status."""
    return item["state"] if isinstance(item.get("state"), dict) else {"status": item.get("status")}


def _status(state: Any) -> str:
    status = str((state or {}).get("status") or "unknown") if isinstance(state, dict) else "unknown"
    return status.lower()


def _addresses(state: Any) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    network = state.get("network") if isinstance(state, dict) else None
    if not isinstance(network, dict):
        return out
    for iface, info in network.items():
        if iface == "lo" or not isinstance(info, dict):
            continue
        for addr in info.get("addresses") or []:
            if isinstance(addr, dict) and addr.get("address"):
                out.append({k: str(addr.get(k) or "") for k in ("family", "address", "scope")})
    return out


def _ip(state: Any) -> str:
    """The first global IPv4 address, else the first global IPv6 one, else ""."""
    addrs = [a for a in _addresses(state) if a["scope"] == "global"]
    return next((a["address"] for family in ("inet", "inet6") for a in addrs if a["family"] == family), "")


def _create_body(
    config: dict[str, Any], spec: dict[str, Any], name: str, request_id: str, start: bool
) -> dict[str, Any]:
    image = dict(PRICING.images(config)[spec["os"]])
    by = "fingerprint" if image.get("fingerprint") else "alias"
    source: dict[str, Any] = {"type": "image", by: image[by]}
    if image.get("server"):
        source["server"] = image["server"]
        source["protocol"] = image.get("protocol") or "simplestreams"
    pool = str(_cfg(config, "storage_pool"))
    devices = {"root": {"type": "disk", "path": "/", "pool": pool, "size": f"{spec['disk_gb']}GiB"}}
    network = str(_cfg(config, "network"))
    if network and spec["bandwidth_mbps"] > 0:
        nic, limit = str(_cfg(config, "nic_name")), f"{spec['bandwidth_mbps']}Mbit"
        devices[nic] = {"type": "nic", "network": network, "name": nic, "limits.ingress": limit, "limits.egress": limit}
    return {
        "name": name,
        "type": image.get("instance_type") or _cfg(config, "instance_type"),
        "description": f"RustBill order {request_id}",
        "source": source,
        "config": {
            "limits.cpu": str(spec["cpu_cores"]),
            "limits.memory": f"{spec['memory_gb']}GiB",
            "user.rustbill.request_id": request_id,
            "user.rustbill.os": spec["os"],
        },
        "devices": devices,
        "profiles": list(_cfg(config, "profiles")),
        "start": start,
    }


async def _instance_or_none(conn: _Conn, config: dict[str, Any], name: str) -> dict[str, Any] | None:
    try:
        meta = await _get(conn, _inst_path(name), f"instance {name!r}", _params(config))
    except sdk.PluginError as exc:
        if exc.code == "NOT_FOUND" and "project" not in exc.message.lower():
            return None
        raise
    return meta if isinstance(meta, dict) else None


# What Incus (and LXD) call the operation of POST /1.0/instances; older LXD said "container".
_CREATE_OPS = ("Creating instance", "Creating container")
# The error of a create that found another operation (another attempt's create) holding the name.
_BUSY_RE = re.compile(r"Instance is busy running a \"?create\"? operation", re.IGNORECASE)


async def _running_ops(
    conn: _Conn, config: dict[str, Any], name: str, descriptions: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The operations of these kinds (Incus's descriptions) still running on instance ``name``."""
    try:
        ops = await _get(conn, "/1.0/operations", f"operations of instance {name!r}", _params(config, recursion=1))
    except sdk.PluginError as exc:
        if exc.code in ("NOT_FOUND", "PERMISSION_DENIED"):
            return []
        raise
    target = _inst_path(name)
    running = []
    for group in (ops or {}).values() if isinstance(ops, dict) else ():
        for op in group or []:
            if not isinstance(op, dict) or op.get("status_code") in (_FINAL_OK, _FINAL_FAILED, _FINAL_CANCELLED):
                continue
            if op.get("description") not in descriptions or not op.get("id"):
                continue
            urls = (op.get("resources") or {}).get("instances") or []
            if any(str(u).split("?", 1)[0] == target for u in urls):
                running.append(op)
    return running


async def _await_ops(
    conn: _Conn, config: dict[str, Any], name: str, timeout_s: int, descriptions: tuple[str, ...] = _CREATE_OPS
) -> str:
    """Wait for the operations of these kinds running on ``name`` — by default the creates (another
    attempt of the same order). Only these: an admin's stop or start beside a retried order is none
    of the order's business, and its failure is not the create's. Returns why the last of them
    failed ("" when none did): a failed create leaves no instance (Incus reverts it), so the caller
    looks again rather than taking the failure as its own. DEADLINE_EXCEEDED when one still runs
    after ``timeout_s``."""
    failed = ""
    for op in await _running_ops(conn, config, name, descriptions):
        what = f"{str(op.get('description') or 'operation').lower()} {name!r}"
        try:
            await _wait(conn, f"/1.0/operations/{op['id']}", op, what, timeout_s)
        except sdk.PluginError as exc:
            if exc.code not in ("FAILED_PRECONDITION", "ABORTED"):
                raise
            failed = exc.message
    return failed


async def _has_extension(conn: _Conn, extension: str) -> bool:
    info = await _get(conn, "/1.0", "server info (GET /1.0)")
    extensions = info.get("api_extensions") if isinstance(info, dict) else None
    return isinstance(extensions, list) and extension in extensions


async def _put_state(conn: _Conn, config: dict[str, Any], name: str, body: dict[str, Any], what: str) -> None:
    """Ask Incus to start, stop or restart instance ``name`` and wait for it (operation_timeout_seconds)."""
    timeout_s = int(_cfg(config, "operation_timeout_seconds"))
    await _run(conn, "PUT", _inst_path(name, "/state"), what, timeout_s, params=_params(config), body=body)


async def _start_new(conn: _Conn, config: dict[str, Any], name: str, timeout_s: int) -> None:
    """Start an instance that was created stopped, as the official clients do on servers without the
    ``instance_create_start`` extension (LXD 5.0 ignores ``"start": true`` there). Another attempt
    of the same order may start it at the same moment: its being running is success."""
    try:
        await _put_state(conn, config, name, {"action": "start"}, f"starting new instance {name!r}")
    except sdk.PluginError as exc:
        if exc.code != "FAILED_PRECONDITION":
            raise
        await _await_ops(conn, config, name, timeout_s, ("Starting instance",))  # "busy running a start"
        if _status(await _state(conn, config, name)) != "running":
            raise


async def _state(conn: _Conn, config: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        state = await _get(conn, _inst_path(name, "/state"), f"instance {name!r}", _params(config))
    except sdk.PluginError as exc:
        if exc.code == "NOT_FOUND":
            raise sdk.NotFound(
                f"instance {name!r} does not exist in Incus project {_cfg(config, 'project')!r} ({exc.message})"
            ) from None
        raise
    return state if isinstance(state, dict) else {}


# ---------------------------------------------------------------- provider contract


# Prices, plans and the spec template come from the config alone (sdk.ServerPricing).
spec_template = PRICING.spec_template  # spec_template(config)
query_price = PRICING.quote  # query_price(config, spec)
sync_products = PRICING.products  # sync_products(config)


async def create_instance(config, spec):
    """Open the instance named after ``request_id``; a second call for the same request (a retry, or
    a concurrent attempt whose POST lost the race) returns the instance the first one opened, as
    docs/plugins.md section 10 asks, once that one's create operation has finished."""
    request_id = sdk.order_request_id(spec)
    spec = PRICING.check_spec(config, spec)
    name = _instance_name(config, request_id)
    timeout_s = int(_cfg(config, "operation_timeout_seconds"))
    conn = _conn(config)
    what = f"creating instance {name!r}"
    existing = await _instance_or_none(conn, config, name)
    if existing is None:
        params = _params(config)
        target = str(PRICING.regions(config).get(spec["region"], {}).get("target") or "")
        if target:
            params["target"] = target
        start_in_post = bool(_cfg(config, "start_on_create")) and await _has_extension(conn, "instance_create_start")
        body = _create_body(config, spec, name, request_id, start_in_post)
        try:
            await _run(conn, "POST", "/1.0/instances", what, timeout_s, params=params, body=body)
        except sdk.PluginError as exc:
            if exc.code == "NOT_FOUND":  # LXD: a local image alias it does not have (the POST is refused)
                raise sdk.FailedPrecondition(
                    f"{exc.message} (check the interface's images, storage_pool and profiles)"
                ) from None
            if not _lost_the_race(exc):
                raise
            # Another attempt of this order made it first: its create decides, not ours.
            failed = await _await_ops(conn, config, name, timeout_s)
            existing = await _instance_or_none(conn, config, name)
            if existing is None:
                if failed:
                    raise sdk.FailedPrecondition(
                        f"{what}: another attempt of request {request_id} was creating it, and failed: {failed}"
                    ) from None
                raise
    if existing is not None:
        owner = str((existing.get("config") or {}).get("user.rustbill.request_id") or "")
        if owner != request_id:
            raise sdk.AlreadyExists(
                f"instance name {name!r} is already used in Incus by another instance (request {owner or 'none'})"
            )
        failed = await _await_ops(conn, config, name, timeout_s)
        if failed and await _instance_or_none(conn, config, name) is None:
            raise sdk.FailedPrecondition(f"{what} failed at Incus: {failed}")
        log.info("create_instance: %s already exists for request %s; returning it", name, request_id)
    result, item = await _described(conn, config, name)
    if _cfg(config, "start_on_create") and result["status"] == "stopped" and _never_started(item):
        # created stopped: a server without instance_create_start, or an attempt cut off before its start
        try:
            await _start_new(conn, config, name, timeout_s)
        except sdk.PluginError as exc:
            if exc.code == "DEADLINE_EXCEEDED":
                raise
            # The instance exists and is this order's: recorded as stopped, an operator can see why;
            # failing the order here would orphan it.
            log.warning("create_instance: %s was made for request %s but did not start: %s", name, request_id, exc)
            return result
        result, item = await _described(conn, config, name)
    return result


async def _described(conn: _Conn, config: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The instance as create_instance and find_instance return it, and Incus's record of it."""
    item = await _get(conn, _inst_path(name), f"instance {name!r}", _params(config, recursion=1))
    item = item if isinstance(item, dict) else {}
    state = item["state"] if isinstance(item.get("state"), dict) else await _state(conn, config, name)
    return sdk.instance_result(name, _status(state), _ip(state), _created_at(item.get("created_at"))), item


def _never_started(item: dict[str, Any]) -> bool:
    """Incus and LXD report an instance that never ran with a zero last_used_at (1970 or year 1)."""
    used = str(item.get("last_used_at") or "")
    return not used or used.startswith(("1970-01-01T00:00:00", "0001-01-01"))


def _lost_the_race(exc: sdk.PluginError) -> bool:
    """Whether a failed POST /1.0/instances means that another request made the name first: a 409 (a
    500 from some versions) "already exists", or, when both POSTs were accepted, an operation that
    failed with "Instance is busy running a "create" operation" (LXD 5.0, Incus)."""
    if exc.code in ("ALREADY_EXISTS", "UNAVAILABLE") and "already exists" in exc.message.lower():
        return True
    return exc.code == "FAILED_PRECONDITION" and bool(_BUSY_RE.search(exc.message))


async def find_instance(config, request_id):
    """The instance an order (``request_id``) made — named after it, with the request id in
    ``user.rustbill.request_id`` — or None when there is none. A create operation still running on it
    (its image still being fetched) is waited for first, up to operation_timeout_seconds (other
    operations, such as an admin's stop, are not); if it is still running then, the answer is
    UNAVAILABLE (ask again later), never None."""
    request_id = sdk.find_request_id(request_id)
    name = _instance_name(config, request_id)
    timeout_s = int(_cfg(config, "operation_timeout_seconds"))
    conn = _conn(config)
    try:
        await _await_ops(conn, config, name, timeout_s)  # failed or cancelled: see what is left
    except sdk.PluginError as exc:
        if exc.code == "DEADLINE_EXCEEDED":
            raise sdk.Unavailable(
                f"instance {name!r} is still being made at {conn.where}; ask again later ({exc.message})"
            ) from None
        raise
    existing = await _instance_or_none(conn, config, name)
    if existing is None:
        return None
    owner = str((existing.get("config") or {}).get("user.rustbill.request_id") or "")
    if owner != request_id:
        return None  # the name is taken by something else: this order made nothing
    log.info("find_instance: order %s has instance %s at %s", request_id, name, conn.where)
    return (await _described(conn, config, name))[0]


async def get_instance_status(config, instance_id):
    name = _name(instance_id, "instance_id")
    state = await _state(_conn(config), config, name)
    return sdk.instance_result(name, _status(state), _ip(state))


async def sync_upstream_instances(config):
    conn = _conn(config)
    items = await _get(conn, "/1.0/instances", "listing instances", _params(config, recursion=2))
    if not isinstance(items, list):
        raise sdk.FailedPrecondition(f"{conn.where} answered the instance list with {type(items).__name__}")
    out = []
    for item in items:
        if isinstance(item, dict) and item.get("name"):
            state = _item_state(item)
            created_at = _created_at(item.get("created_at"))
            out.append(sdk.instance_result(str(item["name"]), _status(state), _ip(state), created_at))
    return out


def get_upstream_balance(config):
    raise sdk.PluginError(
        "incus is a first-party provider (your own Incus servers): there is no upstream balance", "UNIMPLEMENTED"
    )


# ---------------------------------------------------------------- health


def _server_summary(conn: _Conn, config: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """What GET /1.0 says about the server, for the admin page and the health check's log."""
    env = info.get("environment") or {}
    return {
        "endpoint": conn.where,
        "auth": str(info.get("auth") or ""),
        "api_version": str(info.get("api_version") or ""),
        "api_status": str(info.get("api_status") or ""),
        "server": str(env.get("server") or ""),
        "server_version": str(env.get("server_version") or ""),
        "server_name": str(env.get("server_name") or ""),
        "server_clustered": bool(env.get("server_clustered")),
        "client_fingerprint": conn.fingerprint,
        "project": str(_cfg(config, "project")),
    }


async def health_check(config):
    conn = _conn(config)
    info = await _get(conn, "/1.0", "server info (GET /1.0)")
    if not isinstance(info, dict) or "api_version" not in info:
        return f"{conn.where} answered GET /1.0 without server information; is this an Incus server?"
    if info.get("auth") != "trusted":
        return (
            f"{conn.where} does not trust the client certificate (auth: {info.get('auth') or 'missing'}; SHA-256 "
            f"fingerprint {conn.fingerprint or '-'}); add it on the server with "
            "`incus config trust add-certificate client.crt`"
        )
    if info.get("api_version") != "1.0":
        return f"{conn.where} speaks REST API version {info.get('api_version')!r}; this plugin speaks 1.0"
    project = str(_cfg(config, "project"))
    try:
        await _get(conn, f"/1.0/projects/{quote(project, safe='')}", f"project {project!r}")
        pool = str(_cfg(config, "storage_pool"))
        await _get(conn, f"/1.0/storage-pools/{quote(pool, safe='')}", f"storage pool {pool!r}")
        network = str(_cfg(config, "network"))
        if network:
            await _get(conn, f"/1.0/networks/{quote(network, safe='')}", f"network {network!r}", _params(config))
        for profile in _cfg(config, "profiles"):
            await _get(conn, f"/1.0/profiles/{quote(str(profile), safe='')}", f"profile {profile!r}", _params(config))
    except sdk.PluginError as exc:
        if exc.code == "NOT_FOUND":
            return f"{conn.where}: {exc.message} (check the interface's project, storage_pool, network and profiles)"
        raise
    srv = _server_summary(conn, config, info)
    name, version = srv["server"] or "incus", srv["server_version"]
    log.info(
        "health_check: %s is %s %s (API 1.0), server %s", conn.where, name, version or "?", srv["server_name"] or "?"
    )
    return {"healthy": True, "server_version": version, "api_version": srv["api_version"]}


# ---------------------------------------------------------------- admin page and actions


def _summary(item: dict[str, Any]) -> dict[str, Any]:
    state = _item_state(item)
    cfg = item.get("expanded_config") or item.get("config") or {}
    devices = item.get("expanded_devices") or item.get("devices") or {}
    root = devices.get("root") or {}
    return {
        "name": str(item.get("name") or ""),
        "type": str(item.get("type") or ""),
        "status": _status(state),
        "ip_address": _ip(state),
        "addresses": [a["address"] for a in _addresses(state) if a["scope"] == "global"],
        "limits_cpu": str(cfg.get("limits.cpu") or ""),
        "limits_memory": str(cfg.get("limits.memory") or ""),
        "root_size": str(root.get("size") or ""),
        "created_at": _created_at(item.get("created_at")),
        "request_id": str(cfg.get("user.rustbill.request_id") or ""),
    }


async def admin_list_instances(config):
    """Every instance of the project, as on the page."""
    conn = _conn(config)
    items = await _get(conn, "/1.0/instances", "listing instances", _params(config, recursion=2))
    return [_summary(i) for i in items or [] if isinstance(i, dict)]


async def admin_server_info(config):
    """Endpoint, auth, API version, server version and name, client fingerprint, project."""
    conn = _conn(config)
    info = await _get(conn, "/1.0", "server info (GET /1.0)")
    return _server_summary(conn, config, info if isinstance(info, dict) else {})


async def admin_instance(config):
    """One instance's summary: args ``{"name": "..."}``."""
    name = sdk.action_target(config, _name)
    conn = _conn(config)
    item = await _get(conn, _inst_path(name), f"instance {name!r}", _params(config, recursion=1))
    return _summary(item if isinstance(item, dict) else {})


async def _change_state(config: dict[str, Any], action: str) -> dict[str, Any]:
    name = sdk.action_target(config, _name)
    conn = _conn(config)
    body: dict[str, Any] = {"action": action}
    if action in ("stop", "restart"):
        body["force"] = bool(config.get("force", False))
        body["timeout"] = int(config.get("timeout", 30))
    await _put_state(conn, config, name, body, f"{action} of instance {name!r}")
    state = await _state(conn, config, name)
    return {"name": name, "action": action, "status": _status(state), "ip_address": _ip(state)}


async def admin_start(config):
    """Start an instance: args ``{"name": "..."}``."""
    return await _change_state(config, "start")


async def admin_stop(config):
    """Stop an instance: args ``{"name": "...", "force": false, "timeout": 30}``."""
    return await _change_state(config, "stop")


async def admin_restart(config):
    """Restart an instance: args ``{"name": "...", "force": false, "timeout": 30}``."""
    return await _change_state(config, "restart")


async def admin_delete(config):
    """Delete an instance: args ``{"name": "...", "force": false}``; force stops a running one first."""
    name = sdk.action_target(config, _name)
    conn = _conn(config)
    timeout_s = int(_cfg(config, "operation_timeout_seconds"))
    state = await _state(conn, config, name)
    if _status(state) != "stopped":
        if not config.get("force"):
            raise sdk.FailedPrecondition(f'instance {name!r} is {_status(state)}; stop it first or pass "force": true')
        await _put_state(conn, config, name, {"action": "stop", "force": True}, f"stop of instance {name!r}")
    await _run(conn, "DELETE", _inst_path(name), f"deleting instance {name!r}", timeout_s, params=_params(config))
    return {"name": name, "action": "delete", "status": "deleted"}


# Buttons per instance status: (action, label). Deleting is in the form below the table, which
# asks for the instance's name.
_ROW_ACTIONS = {
    "running": (("admin_stop", "Stop"), ("admin_restart", "Restart")),
    "stopped": (("admin_start", "Start"),),
    "frozen": (("admin_stop", "Stop"),),
    "error": (("admin_start", "Start"), ("admin_stop", "Stop")),
}
_DELETE_FORM = sdk.action_form(
    "delete",
    "Delete an instance",
    "instance",
    "Instance name (type it to confirm)",
    [("admin_delete", "Delete", {})],
    flags=[("force", "stop it first if it runs")],
    button="Delete",
)
# Row buttons run their action on their instance, the form deletes once the name is typed in.
_PAGE_SCRIPT = f"<script>\n{sdk.ITEM_LIST_JS}{sdk.ACTION_FORM_JS}</script>"


async def admin_page(config):
    e = html.escape
    where = str(_cfg(config, "url") or _cfg(config, "socket_path"))
    try:
        server = await admin_server_info(config)
        instances = await admin_list_instances(config)
    except sdk.PluginError as exc:
        parts = [sdk.unreachable("Incus", exc.message)]
    else:
        where = server.get("endpoint") or where
        headers = ("Name", "Type", "Status", "Addresses", "CPU", "Memory", "Root disk", "Created", "RustBill request")
        table = sdk.item_list(headers, instances, lambda i: (
            i["name"], i["type"], i["status"], ", ".join(i["addresses"]), i["limits_cpu"], i["limits_memory"],
            i["root_size"], i["created_at"], i["request_id"],
        ), _ROW_ACTIONS, "instance")  # fmt: skip
        parts = [
            f"<p>{e(server.get('server') or 'incus')} {e(server.get('server_version'))} on "
            f"{e(server.get('server_name'))}, REST API {e(server.get('api_version'))}, auth "
            f"{e(server.get('auth'))}, project <code>{e(server.get('project'))}</code></p>",
            table + _DELETE_FORM,
        ]
    parts.append(sdk.actions_note(globals()))  # every admin_* above, with its docstring
    page = sdk.admin_html("Incus", f"Incus — {where}", parts, sdk.admin_bridge_script() + _PAGE_SCRIPT)
    return {"title": "Incus", "html": page}
