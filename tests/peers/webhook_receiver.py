"""A webhook receiver for tests that verifies requests as the Standard Webhooks specification
(v1.0.0, https://www.standardwebhooks.com, spec/standard-webhooks.md) tells consumers to — written
from the spec, not from the plugin under test.

- Listens on 127.0.0.1 (port chosen by the OS) in a thread; ``POST <path>`` is the endpoint.
- Verification, in the spec's order: the three headers ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature`` are present (else 400); the timestamp is an integer within ±``tolerance``
  seconds of now (else 400); ``webhook-signature`` is a space-delimited list of
  ``<version>,<base64>``; a ``v1`` entry must equal base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))
  for one of the receiver's secrets (``whsec_`` + base64, the key is the decoded bytes), compared in
  constant time (else 401). The body must be JSON (else 400). Accepted: 200 ``{"ok": true}``.
- ``webhook-id`` is the idempotency key: a verified request whose id was already accepted is
  answered 200 again and counted in ``duplicates``, not in ``deliveries``.
- ``OPTIONS <path>`` answers 204 with ``Allow: POST, OPTIONS``; other paths 404; GET 405.

Knobs for failure tests: ``fail_next`` (a list of HTTP statuses answered, one per request, before any
verification — a receiver that is down; 3xx come with a Location header; 5xx with ``retry_after``
as Retry-After when set), ``always`` (answer that status to every request), ``delay`` (seconds
before any answer). Every request is recorded in ``requests`` with the status it got.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "WebhookReceiver", "new_secret", "sign"]


def new_secret(nbytes: int = 32) -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def _key(secret: str) -> bytes:
    b64 = secret.removeprefix("whsec_")
    return base64.b64decode(b64 + "=" * (-len(b64) % 4))


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """One ``v1,<base64>`` signature, as the spec defines it."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    reason: str = ""
    at: float = field(default_factory=time.time)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, secrets_: str | list[str], *, path: str = "/hooks/rustbill", tolerance: int = 300) -> None:
        self.secrets = [secrets_] if isinstance(secrets_, str) else list(secrets_)
        self.path = path
        self.tolerance = tolerance
        self.fail_next: list[int] = []
        self.always: int | None = None
        self.retry_after: str | None = None
        self.delay = 0.0
        self.requests: list[Received] = []
        self.deliveries: list[Received] = []
        self.duplicates = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _read(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _answer(self, status: int, body: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            def _handle(self, method: str) -> None:
                body = self._read() if method == "POST" else b""
                rec = Received(method, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.requests.append(rec)
                if receiver.delay:
                    receiver._stopping.wait(receiver.delay)
                status, answer, headers = receiver.handle(rec)
                rec.status = status
                try:
                    self._answer(status, answer, headers)
                except OSError:
                    pass  # the sender gave up waiting

            def do_POST(self) -> None:
                self._handle("POST")

            def do_OPTIONS(self) -> None:
                self._handle("OPTIONS")

            def do_GET(self) -> None:
                self._handle("GET")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    # -- lifecycle

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def posts(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.method == "POST"]

    # -- the endpoint

    def handle(self, rec: Received) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        path = rec.path.split("?", 1)[0]
        if path != self.path:
            return self._refuse(rec, 404, "no such endpoint")
        if rec.method == "OPTIONS":
            rec.reason = "options"
            return 204, None, {"Allow": "POST, OPTIONS"}
        if rec.method != "POST":
            return self._refuse(rec, 405, "POST only", {"Allow": "POST, OPTIONS"})
        with self._lock:
            forced = self.fail_next.pop(0) if self.fail_next else self.always
        if forced is not None:
            headers = {}
            if 300 <= forced < 400:
                headers["Location"] = self.path + "/moved"
            if forced >= 500 and self.retry_after is not None:
                headers["Retry-After"] = self.retry_after
            return self._refuse(rec, forced, "forced failure", headers)

        msg_id = rec.headers.get("webhook-id", "")
        ts = rec.headers.get("webhook-timestamp", "")
        sig_header = rec.headers.get("webhook-signature", "")
        if not (msg_id and ts and sig_header):
            return self._refuse(rec, 400, "missing webhook-id, webhook-timestamp or webhook-signature")
        try:
            ts_int = int(ts)
        except ValueError:
            return self._refuse(rec, 400, "webhook-timestamp is not an integer")
        now = time.time()
        if ts_int < now - self.tolerance:
            return self._refuse(rec, 400, "message timestamp too old")
        if ts_int > now + self.tolerance:
            return self._refuse(rec, 400, "message timestamp too new")
        expected = [base64.b64decode(sign(s, msg_id, ts, rec.body).split(",", 1)[1]) for s in self.secrets]
        matched = False
        for versioned in sig_header.split(" "):
            version, _, value = versioned.partition(",")
            if version != "v1":
                continue
            try:
                got = base64.b64decode(value, validate=True)
            except ValueError:
                continue
            if any(hmac.compare_digest(e, got) for e in expected):
                matched = True
        if not matched:
            return self._refuse(rec, 401, "no matching signature found")
        try:
            json.loads(rec.body)
        except ValueError:
            return self._refuse(rec, 400, "body is not JSON")
        with self._lock:
            if msg_id in self._seen:
                self.duplicates += 1
                rec.reason = "duplicate"
            else:
                self._seen.add(msg_id)
                self.deliveries.append(rec)
                rec.reason = "accepted"
        return 200, {"ok": True}, {}

    def _refuse(
        self, rec: Received, status: int, reason: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        rec.reason = reason
        return status, {"error": reason}, headers or {}
