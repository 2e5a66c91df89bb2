"""A local Incus REST API server for tests, written from Incus's documentation (lxc/incus
``doc/rest-api.md``, ``doc/rest-api.yaml``, ``doc/authentication.md``; summary in
/work/shared/reference/protocols.md), not from the plugin under test.

What it speaks:

- Transport: HTTPS on 127.0.0.1 (port chosen by the OS), TLS 1.3 minimum, client certificate
  required (``ssl.CERT_REQUIRED``). It works like Incus's documented PKI mode: client certificates
  must be issued by the test CA to pass the handshake, and "the generated certificates are not
  automatically trusted": a client is trusted only when its certificate's SHA-256 fingerprint is in
  the trust store (:meth:`IncusServer.client_cert` adds it unless ``trusted=False``). Or plain HTTP
  on a unix socket (:meth:`IncusServer.start_unix`), where, as with Incus's local socket, every
  client is trusted.
- Envelopes: sync ``{type: "sync", status: "Success", status_code: 200, metadata}`` (HTTP 200);
  async (HTTP 202 with a ``Location`` header) ``{type: "async", status: "Operation created",
  status_code: 100, operation: "/1.0/operations/<uuid>", metadata: <Operation>}``; error
  ``{type: "error", error, error_code, metadata}`` with HTTP 400/403/404/409/500.
- ``GET /`` (untrusted allowed) and ``GET /1.0`` (untrusted clients get the ``ServerUntrusted``
  fields with ``auth: "untrusted"``); every other endpoint answers an untrusted client
  ``403 not authorized``.
- ``GET /1.0/instances`` (``recursion`` 0: URLs, 1: ``Instance``, 2: ``InstanceFull`` with
  ``state``; ``project``, ``all-projects``), ``POST /1.0/instances`` (async; the instance record
  appears at once, stopped, and the operation finishes after ``op_delay`` seconds, starting it when
  ``start`` is true), ``GET``/``DELETE /1.0/instances/{name}`` (deleting a running instance is a
  400 "Instance is running"), ``GET``/``PUT /1.0/instances/{name}/state`` (start, stop, restart,
  freeze, unfreeze as async operations; starting a running instance fails the operation with "The
  instance is already running", stopping a stopped one with "The instance is already stopped").
- ``GET /1.0/operations`` (by status), ``GET /1.0/operations/{id}``, ``GET
  /1.0/operations/{id}/wait?timeout=N``: as the Incus daemon does, the wait answers 200 with the
  operation's current state when the timeout passes first.
- ``GET /1.0/projects/{name}``, ``GET /1.0/storage-pools/{name}``, ``GET /1.0/profiles/{name}``,
  ``GET /1.0/networks/{name}``.
- ``?project=`` on every instance and profile endpoint; an unknown project is a 404.

Knobs for failure tests (attributes, change them at any time): ``op_delay`` (seconds a background
operation takes), ``fail_operations`` (an error text: every operation started from now on fails with
it, ``status_code`` 400 and ``err``), ``fail_requests`` (an error text: every trusted API request
answers HTTP 500 with it), ``request_delay`` (seconds every request waits before it is answered), and
``tls_max_version`` (constructor: e.g. TLS 1.2 only, for a protocol
mismatch). ``requests`` records what was received: method, path, query, JSON body and who sent it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import socket
import socketserver
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

__all__ = ["ClientCert", "IncusServer", "Received"]

STATUS = {
    100: "Operation created",
    101: "Started",
    102: "Stopped",
    103: "Running",
    104: "Canceling",
    105: "Pending",
    106: "Starting",
    107: "Stopping",
    108: "Aborting",
    109: "Freezing",
    110: "Frozen",
    111: "Thawed",
    112: "Error",
    113: "Ready",
    200: "Success",
    400: "Failure",
    401: "Canceled",
}
INSTANCE_CODES = {"Running": 103, "Stopped": 102, "Frozen": 110, "Error": 112}
API_EXTENSIONS = ["etag", "patch", "network", "storage", "projects", "instances", "instance_create_start"]
_SIZE_RE = re.compile(r"^\d+(\.\d+)?(B|kB|MB|GB|TB|PB|EB|KiB|MiB|GiB|TiB|PiB|EiB)?$")
_CPU_RE = re.compile(r"^(\d+|\d+-\d+(,\d+-\d+)*|\d+(,\d+)+)$")
_NAME_RE = re.compile(r"^[-a-zA-Z0-9]+$")


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def fingerprint(cert_pem: str) -> str:
    """The SHA-256 fingerprint of a certificate (hex of the DER bytes), as Incus lists it."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def _hostname_error(name: str) -> str | None:
    """Incus's instance name check (shared/validate IsHostname)."""
    if not 1 <= len(name) <= 63:
        return "Name must be 1-63 characters long"
    if name.startswith("-"):
        return 'Name must not start with "-" character'
    if name.endswith("-"):
        return 'Name must not end with "-" character'
    if name.isdigit():
        return "Name cannot be a number"
    if not _NAME_RE.match(name):
        return "Name can only contain alphanumeric and hyphen characters"
    return None


@dataclass(frozen=True)
class ClientCert:
    cert_pem: str
    key_pem: str
    fingerprint: str


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    client: str  # the client certificate's fingerprint, or "unix"


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Instance:
    name: str
    project: str
    type: str
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    profiles: list[str]
    description: str
    created_at: str
    number: int
    status: str = "Stopped"
    last_used_at: str = "1970-01-01T00:00:00Z"

    @property
    def url(self) -> str:
        return f"/1.0/instances/{self.name}" + ("" if self.project == "default" else f"?project={self.project}")

    def basic(self, profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
        expanded_config: dict[str, str] = {}
        expanded_devices: dict[str, dict[str, str]] = {}
        for p in self.profiles:
            prof = profiles.get(p, {})
            expanded_config.update(prof.get("config", {}))
            expanded_devices.update(prof.get("devices", {}))
        expanded_config.update(self.config)
        expanded_devices.update(self.devices)
        return {
            "architecture": "x86_64",
            "config": dict(self.config),
            "created_at": self.created_at,
            "description": self.description,
            "devices": dict(self.devices),
            "ephemeral": False,
            "expanded_config": expanded_config,
            "expanded_devices": expanded_devices,
            "last_used_at": self.last_used_at,
            "location": "none",
            "name": self.name,
            "profiles": list(self.profiles),
            "project": self.project,
            "stateful": False,
            "status": self.status,
            "status_code": INSTANCE_CODES[self.status],
            "type": self.type,
        }

    def state(self) -> dict[str, Any]:
        running = self.status in ("Running", "Frozen")
        network: dict[str, Any] = {}
        if running:
            network = {
                "eth0": {
                    "addresses": [
                        {
                            "family": "inet6",
                            "address": f"fe80::216:3eff:fe00:{self.number:x}",
                            "netmask": "64",
                            "scope": "link",
                        },
                        {"family": "inet", "address": f"10.158.0.{self.number}", "netmask": "24", "scope": "global"},
                        {
                            "family": "inet6",
                            "address": f"fd42:4c81:5770:1eaf::{self.number:x}",
                            "netmask": "64",
                            "scope": "global",
                        },
                    ],
                    "counters": {"bytes_received": 0, "bytes_sent": 0, "packets_received": 0, "packets_sent": 0},
                    "host_name": f"veth{self.number:08x}",
                    "hwaddr": f"00:16:3e:00:00:{self.number % 256:02x}",
                    "mtu": 1500,
                    "state": "up",
                    "type": "broadcast",
                },
                "lo": {
                    "addresses": [
                        {"family": "inet", "address": "127.0.0.1", "netmask": "8", "scope": "local"},
                        {"family": "inet6", "address": "::1", "netmask": "128", "scope": "local"},
                    ],
                    "counters": {"bytes_received": 0, "bytes_sent": 0, "packets_received": 0, "packets_sent": 0},
                    "host_name": "",
                    "hwaddr": "",
                    "mtu": 65536,
                    "state": "up",
                    "type": "loopback",
                },
            }
        return {
            "cpu": {"usage": 1000000 if running else 0},
            "disk": {"root": {"usage": 1 << 28, "total": 0}},
            "memory": {
                "usage": (64 << 20) if running else 0,
                "usage_peak": 0,
                "total": 0,
                "swap_usage": 0,
                "swap_usage_peak": 0,
            },
            "network": network,
            "pid": 1000 + self.number if running else 0,
            "processes": 12 if running else 0,
            "status": self.status,
            "status_code": INSTANCE_CODES[self.status],
        }


@dataclass
class Operation:
    id: str
    description: str
    project: str
    resources: dict[str, list[str]]
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    status_code: int = 103
    err: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "class": "task",
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": STATUS[self.status_code],
            "status_code": self.status_code,
            "resources": {k: list(v) for k, v in self.resources.items()},
            "metadata": None,
            "may_cancel": False,
            "err": self.err,
            "location": "none",
        }


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, peer: IncusServer, ctx: ssl.SSLContext) -> None:
        self.peer = peer
        self.ctx = ctx
        super().__init__(("127.0.0.1", 0), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        # The handshake happens in the request's own thread (finish_request), never in the accept loop.
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.peer.track(request):
            try:
                request.settimeout(10)
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                with self.peer.lock:
                    self.peer.handshake_errors.append(f"{type(exc).__name__}: {exc}")
                return
            request.settimeout(None)
            super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-request is not a test failure


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, peer: IncusServer, path: str) -> None:
        self.peer = peer
        super().__init__(path, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self.peer.track(request):
            super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "incus-test"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "unix" if isinstance(self.server, _UnixServer) else str(self.client_address[0])

    def _client(self) -> tuple[str, bool]:
        """(who, trusted): the unix socket is always trusted; over TLS, the certificate's fingerprint."""
        peer: IncusServer = self.server.peer
        if isinstance(self.server, _UnixServer):
            return "unix", True
        der = self.connection.getpeercert(binary_form=True)
        fp = hashlib.sha256(der).hexdigest() if der else ""
        with peer.lock:
            return fp, fp in peer.trusted

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        peer: IncusServer = self.server.peer
        parts = urlsplit(self.path)
        path = unquote(parts.path).rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        who, trusted = self._client()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        with peer.lock:
            peer.requests.append(Received(method, path, query, body, who))
            delay = peer.request_delay
        if delay:
            peer.stopped.wait(delay)  # a slow server (cut short when the test server stops)
        try:
            if path == "/" and method == "GET":
                self._send(200, _sync(["/1.0"]))
                return
            if path == "/1.0" and method == "GET":
                self._send(200, _sync(peer.server_info(trusted, who)))
                return
            if not trusted:
                raise ApiError(403, "not authorized")
            if peer.fail_requests:
                raise ApiError(500, peer.fail_requests)
            if isinstance(body, str):
                raise ApiError(400, "Invalid JSON in request body")
            status, payload, location = peer.route(method, path, query, body)
        except ApiError as exc:
            self._send(
                exc.code,
                {
                    "type": "error",
                    "status": "",
                    "status_code": 0,
                    "operation": "",
                    "error_code": exc.code,
                    "error": exc.message,
                    "metadata": None,
                },
            )
            return
        self._send(status, payload, location)

    def _send(self, status: int, payload: dict[str, Any], location: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if location:
            self.send_header("Location", location)
        self.end_headers()
        self.wfile.write(data)


def _sync(metadata: Any) -> dict[str, Any]:
    return {
        "type": "sync",
        "status": "Success",
        "status_code": 200,
        "operation": "",
        "error_code": 0,
        "error": "",
        "metadata": metadata,
    }


def _async(op: Operation) -> dict[str, Any]:
    return {
        "type": "async",
        "status": "Operation created",
        "status_code": 100,
        "operation": f"/1.0/operations/{op.id}",
        "error_code": 0,
        "error": "",
        "metadata": op.render(),
    }


class IncusServer:
    def __init__(self, *, op_delay: float = 0.2, tls_max_version: ssl.TLSVersion | None = None) -> None:
        self.ca = trustme.CA(organization_name="Incus test PKI")
        self.server_leaf = self.ca.issue_cert("127.0.0.1", "localhost", common_name="incus-test-server")
        self.lock = threading.RLock()
        self.trusted: set[str] = set()
        self.op_delay = op_delay
        self.fail_operations: str | None = None
        self.fail_requests: str | None = None
        self.request_delay = 0.0
        self.stopped = threading.Event()
        self.tls_max_version = tls_max_version
        self.requests: list[Received] = []
        self.handshake_errors: list[str] = []
        self.pools = {"default"}
        self.networks = {"incusbr0"}
        self.images = {"debian/12", "ubuntu/24.04", "alpine/3.20"}
        self.projects: dict[str, dict[str, Any]] = {}
        self.add_project("default")
        self.instances: dict[tuple[str, str], Instance] = {}
        self.operations: dict[str, Operation] = {}
        self._numbers = itertools.count(10)
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []
        self._timers: list[threading.Timer] = []
        self._conns: set[Any] = set()
        self.port: int | None = None
        self.socket_path: str | None = None

    # ---------------------------------------------------------------- set-up

    @property
    def server_cert_pem(self) -> str:
        """The server's certificate chain's root (what a client pins to verify the server)."""
        return self.ca.cert_pem.bytes().decode()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_cert(self, *, trusted: bool = True, name: str = "rustbill") -> ClientCert:
        leaf = self.ca.issue_cert(common_name=name)
        cert = leaf.cert_chain_pems[0].bytes().decode()
        cc = ClientCert(cert, leaf.private_key_pem.bytes().decode(), fingerprint(cert))
        if trusted:
            with self.lock:
                self.trusted.add(cc.fingerprint)
        return cc

    def add_project(self, name: str, profiles: dict[str, dict[str, Any]] | None = None) -> None:
        default_profile = {
            "config": {},
            "description": "Default Incus profile",
            "devices": {
                "eth0": {"name": "eth0", "network": "incusbr0", "type": "nic"},
                "root": {"path": "/", "pool": "default", "type": "disk"},
            },
        }
        with self.lock:
            self.projects[name] = {"profiles": {"default": default_profile, **(profiles or {})}}

    def _context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.tls_max_version is not None:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = self.tls_max_version
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.server_leaf.configure_cert(ctx)
        self.ca.configure_trust(ctx)  # client certificates must be issued by the test PKI
        return ctx

    def start(self) -> IncusServer:
        srv = _TLSServer(self, self._context())
        self.port = srv.server_address[1]
        self._serve(srv)
        return self

    def start_unix(self, path: str) -> IncusServer:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        srv = _UnixServer(self, path)
        self.socket_path = path
        self._serve(srv)
        return self

    def _serve(self, srv: socketserver.BaseServer) -> None:
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        t.start()
        self._servers.append(srv)
        self._threads.append(t)

    @contextlib.contextmanager
    def track(self, conn: Any) -> Any:
        """Remember an open client connection, so that stop() can cut it."""
        with self.lock:
            self._conns.add(conn)
        try:
            yield
        finally:
            with self.lock:
                self._conns.discard(conn)

    def stop(self) -> None:
        self.stopped.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        with self.lock:
            conns = list(self._conns)
        for conn in conns:  # keep-alive connections die with the server, as they would with a real one
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in self._threads:
            t.join(5)
        with self.lock:
            timers = list(self._timers)
            for op in self.operations.values():
                op.done.set()
        for timer in timers:
            timer.cancel()
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._servers.clear()
        self._threads.clear()

    # ---------------------------------------------------------------- test helpers

    def received(self, method: str | None = None, path: str | None = None) -> list[Received]:
        with self.lock:
            return [
                r for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)
            ]

    def instance(self, name: str, project: str = "default") -> Instance | None:
        with self.lock:
            return self.instances.get((project, name))

    def add_instance(
        self, name: str, *, project: str = "default", status: str = "Running", config: dict[str, str] | None = None
    ) -> Instance:
        """An instance made outside the plugin (e.g. by an operator with the incus CLI)."""
        with self.lock:
            inst = Instance(
                name, project, "container", dict(config or {}), {}, ["default"], "", _now(), next(self._numbers), status
            )
            self.instances[(project, name)] = inst
            return inst

    # ---------------------------------------------------------------- the API

    def server_info(self, trusted: bool, who: str) -> dict[str, Any]:
        info: dict[str, Any] = {
            "api_extensions": API_EXTENSIONS,
            "api_status": "stable",
            "api_version": "1.0",
            "auth": "trusted" if trusted else "untrusted",
            "auth_methods": ["tls"],
            "config": {},
            "public": False,
        }
        if not trusted:
            return info
        info.update(
            {
                "auth_user_method": "unix" if who == "unix" else "tls",
                "auth_user_name": who,
                "config": {"core.https_address": f"127.0.0.1:{self.port}"},
                "environment": {
                    "addresses": [f"127.0.0.1:{self.port}"],
                    "architectures": ["x86_64", "i686"],
                    "certificate": self.server_leaf.cert_chain_pems[0].bytes().decode(),
                    "certificate_fingerprint": fingerprint(self.server_leaf.cert_chain_pems[0].bytes().decode()),
                    "driver": "lxc | qemu",
                    "driver_version": "6.0.0 | 9.0.0",
                    "kernel": "Linux",
                    "kernel_architecture": "x86_64",
                    "kernel_version": "6.1.0",
                    "os_name": "Debian GNU/Linux",
                    "os_version": "12",
                    "project": "default",
                    "server": "incus",
                    "server_clustered": False,
                    "server_name": "incus-test",
                    "server_pid": os.getpid(),
                    "server_version": "6.0.4",
                    "storage": "dir",
                    "storage_version": "1",
                },
            }
        )
        return info

    def _project(self, query: dict[str, str]) -> tuple[str, dict[str, Any]]:
        name = query.get("project") or "default"
        proj = self.projects.get(name)
        if proj is None:
            raise ApiError(404, "Project not found")
        return name, proj

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any], str | None]:
        with self.lock:
            seg = path.split("/")[1:]  # "", "1.0", ...
            if seg[:1] != ["1.0"]:
                raise ApiError(404, "not found")
            rest = seg[1:]
            if rest == ["instances"]:
                if method == "GET":
                    return 200, _sync(self._list_instances(query)), None
                if method == "POST":
                    return self._create(query, body)
            elif len(rest) == 2 and rest[0] == "instances":
                if method == "GET":
                    inst = self._get_instance(query, rest[1])
                    meta = inst.basic(self._project(query)[1]["profiles"])
                    if query.get("recursion") in ("1", "2"):
                        meta.update({"state": inst.state(), "snapshots": [], "backups": []})
                    return 200, _sync(meta), None
                if method == "DELETE":
                    return self._delete(query, rest[1])
            elif len(rest) == 3 and rest[0] == "instances" and rest[2] == "state":
                if method == "GET":
                    return 200, _sync(self._get_instance(query, rest[1]).state()), None
                if method == "PUT":
                    return self._state_put(query, rest[1], body)
            elif rest == ["operations"] and method == "GET":
                return 200, _sync(self._list_operations(query)), None
            elif len(rest) >= 2 and rest[0] == "operations":
                op = self.operations.get(rest[1])
                if op is None:
                    raise ApiError(404, "Operation not found")
                if len(rest) == 2 and method == "GET":
                    return 200, _sync(op.render()), None
                if rest[2:] == ["wait"] and method == "GET":
                    return self._wait(op, query)
            elif len(rest) == 2 and rest[0] == "projects" and method == "GET":
                proj = self.projects.get(rest[1])
                if proj is None:
                    raise ApiError(404, "Project not found")
                return 200, _sync({"name": rest[1], "config": {"features.profiles": "true"}, "description": ""}), None
            elif len(rest) == 2 and rest[0] == "storage-pools" and method == "GET":
                if rest[1] not in self.pools:
                    raise ApiError(404, "Storage pool not found")
                return 200, _sync({"name": rest[1], "driver": "dir", "status": "Created", "config": {}}), None
            elif len(rest) == 2 and rest[0] == "networks" and method == "GET":
                self._project(query)
                if rest[1] not in self.networks:
                    raise ApiError(404, "Network not found")
                return 200, _sync({"name": rest[1], "type": "bridge", "managed": True, "status": "Created"}), None
            elif len(rest) == 2 and rest[0] == "profiles" and method == "GET":
                _, proj = self._project(query)
                prof = proj["profiles"].get(rest[1])
                if prof is None:
                    raise ApiError(404, "Profile not found")
                return 200, _sync({"name": rest[1], **prof}), None
            raise ApiError(404, "not found")

    def _get_instance(self, query: dict[str, str], name: str) -> Instance:
        project, _ = self._project(query)
        inst = self.instances.get((project, name))
        if inst is None:
            raise ApiError(404, "Instance not found")
        return inst

    def _list_instances(self, query: dict[str, str]) -> list[Any]:
        if query.get("all-projects") in ("true", "1"):
            found = sorted(self.instances.values(), key=lambda i: (i.project, i.name))
        else:
            project, _ = self._project(query)
            found = sorted((i for i in self.instances.values() if i.project == project), key=lambda i: i.name)
        recursion = query.get("recursion", "0")
        if recursion == "0":
            return [i.url for i in found]
        out = []
        for inst in found:
            meta = inst.basic(self.projects[inst.project]["profiles"])
            if recursion == "2":
                meta.update({"state": inst.state(), "snapshots": [], "backups": []})
            out.append(meta)
        return out

    def _list_operations(self, query: dict[str, str]) -> dict[str, list[Any]]:
        project, _ = self._project(query)
        out: dict[str, list[Any]] = {}
        for op in self.operations.values():
            if op.project != project:
                continue
            key = STATUS[op.status_code].lower()
            out.setdefault(key, []).append(op.render() if query.get("recursion") == "1" else f"/1.0/operations/{op.id}")
        return out

    def _operation(
        self, project: str, description: str, resources: dict[str, list[str]], work: Any, revert: Any = None
    ) -> Operation:
        """Start a background operation; ``work()`` runs after ``op_delay`` and raises to fail it;
        ``revert()`` undoes what the request did at once when the operation fails."""
        op = Operation(str(uuid.uuid4()), description, project, resources)
        self.operations[op.id] = op
        failure = self.fail_operations

        def finish() -> None:
            with self.lock:
                if op.done.is_set():
                    return
                try:
                    if failure:
                        raise ApiError(400, failure)
                    work()
                    op.status_code = 200
                except ApiError as exc:
                    op.status_code, op.err = 400, exc.message
                    if revert is not None:
                        revert()
                op.updated_at = _now()
                op.done.set()

        timer = threading.Timer(self.op_delay, finish)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()
        return op

    def _wait(self, op: Operation, query: dict[str, str]) -> tuple[int, dict[str, Any], None]:
        try:
            timeout = int(query.get("timeout", "-1"))
        except ValueError:
            raise ApiError(500, f"strconv.Atoi: parsing {query.get('timeout')!r}: invalid syntax") from None
        self.lock.release()  # never hold the state lock while waiting
        try:
            op.done.wait(None if timeout < 0 else timeout)
        finally:
            self.lock.acquire()
        return 200, _sync(op.render()), None

    def _create(self, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any], str]:
        project, proj = self._project(query)
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid request body")
        name = body.get("name") or f"auto-{next(self._numbers)}"
        err = _hostname_error(name)
        if err:
            raise ApiError(400, f"Invalid instance name: {err}")
        itype = body.get("type") or "container"
        if itype not in ("container", "virtual-machine"):
            raise ApiError(400, f"Invalid instance type {itype!r}")
        source = body.get("source") or {}
        if source.get("type") != "image":
            raise ApiError(400, f"Unknown instance source type {source.get('type')!r}")
        if (project, name) in self.instances:
            raise ApiError(409, f'Instance "{name}" already exists')
        profiles = body.get("profiles")
        profiles = ["default"] if profiles is None else list(profiles)
        for p in profiles:
            if p not in proj["profiles"]:
                raise ApiError(400, f'Requested profile "{p}" doesn\'t exist')
        config = {str(k): str(v) for k, v in (body.get("config") or {}).items()}
        devices = {str(k): {str(a): str(b) for a, b in v.items()} for k, v in (body.get("devices") or {}).items()}
        inst = Instance(
            name, project, itype, config, devices, profiles, body.get("description") or "", _now(), next(self._numbers)
        )
        self.instances[(project, name)] = inst  # the record exists while the image is unpacked
        start = bool(body.get("start"))

        def work() -> None:
            self._check_new_instance(inst, source)
            if start:
                inst.status = "Running"
                inst.last_used_at = _now()

        def revert() -> None:
            self.instances.pop((project, name), None)  # Incus reverts a failed creation

        op = self._operation(project, "Creating instance", {"instances": [inst.url]}, work, revert)
        return 202, _async(op), f"/1.0/operations/{op.id}"

    def _check_new_instance(self, inst: Instance, source: dict[str, Any]) -> None:
        alias, fp = source.get("alias"), source.get("fingerprint")
        if source.get("server") and source.get("protocol", "incus") not in ("simplestreams", "incus", "oci"):
            raise ApiError(400, f"Invalid protocol: {source.get('protocol')}")
        if not (alias in self.images or (fp and len(fp) >= 12)):
            raise ApiError(
                404, "Failed getting remote image info: Failed getting image: The requested image couldn't be found"
            )
        for key, value in inst.config.items():
            if key == "limits.memory" and not (_SIZE_RE.match(value) or re.match(r"^\d+%$", value)):
                raise ApiError(400, f'Invalid config: Invalid value for "{key}": {value!r}')
            if key == "limits.cpu" and not _CPU_RE.match(value):
                raise ApiError(400, f'Invalid config: Invalid value for "{key}": {value!r}')
        profiles = self.projects[inst.project]["profiles"]
        root = dict(profiles.get("default", {}).get("devices", {}).get("root", {}))
        root.update(inst.devices.get("root", {}))
        if root.get("pool") not in self.pools:
            raise ApiError(404, f"Failed loading storage pool: Storage pool {root.get('pool')!r} not found")
        if "size" in root and not _SIZE_RE.match(root["size"]):
            raise ApiError(400, f"Invalid root disk size {root['size']!r}")
        for dev_name, dev in inst.devices.items():
            for key in ("limits.ingress", "limits.egress", "limits.max"):
                if key in dev and not re.match(r"^\d+(\.\d+)?(bit|kbit|Mbit|Gbit|Tbit)$", dev[key]):
                    raise ApiError(400, f'Invalid device "{dev_name}": invalid value for {key}: {dev[key]!r}')

    def _delete(self, query: dict[str, str], name: str) -> tuple[int, dict[str, Any], str]:
        inst = self._get_instance(query, name)
        if inst.status != "Stopped":
            raise ApiError(400, "Instance is running")

        def work() -> None:
            self.instances.pop((inst.project, inst.name), None)

        op = self._operation(inst.project, "Deleting instance", {"instances": [inst.url]}, work)
        return 202, _async(op), f"/1.0/operations/{op.id}"

    def _state_put(self, query: dict[str, str], name: str, body: Any) -> tuple[int, dict[str, Any], str]:
        inst = self._get_instance(query, name)
        action = body.get("action") if isinstance(body, dict) else None
        if action not in ("start", "stop", "restart", "freeze", "unfreeze"):
            raise ApiError(400, f"Unknown action {action}")

        def work() -> None:
            if action == "start":
                if inst.status != "Stopped":
                    raise ApiError(400, "The instance is already running")
                inst.status, inst.last_used_at = "Running", _now()
            elif action == "stop":
                if inst.status == "Stopped":
                    raise ApiError(400, "The instance is already stopped")
                inst.status = "Stopped"
            elif action == "restart":
                if inst.status == "Stopped":
                    raise ApiError(400, "The instance isn't running")
                inst.status, inst.last_used_at = "Running", _now()
            elif action == "freeze":
                if inst.status != "Running":
                    raise ApiError(400, "The instance isn't running")
                inst.status = "Frozen"
            elif action == "unfreeze":
                if inst.status != "Frozen":
                    raise ApiError(400, "The instance is not frozen")
                inst.status = "Running"

        descriptions = {
            "start": "Starting instance",
            "stop": "Stopping instance",
            "restart": "Restarting instance",
            "freeze": "Freezing instance",
            "unfreeze": "Unfreezing instance",
        }
        op = self._operation(inst.project, descriptions[action], {"instances": [inst.url]}, work)
        return 202, _async(op), f"/1.0/operations/{op.id}"
