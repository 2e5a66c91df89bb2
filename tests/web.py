"""Clients of the HTTP listener as browsers and curl speak to it: Connect (JSON and binary) and
gRPC-Web (binary frames), written from the protocols' specifications."""

from __future__ import annotations

import json
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

import httpx
from google.protobuf.message import Message

GRPC_WEB = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}

# One TLS context for every request of these helpers: httpx builds a new one (and loads the CA
# bundle, ~25 ms of CPU) for each client it creates, even for an http:// URL.
TLS = ssl.create_default_context()


def frame(msg: Message | bytes, flag: int = 0) -> bytes:
    data = msg if isinstance(msg, bytes) else msg.SerializeToString()
    return struct.pack(">BI", flag, len(data)) + data


@dataclass
class GrpcWebReply:
    http_status: int
    headers: httpx.Headers
    frames: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        """grpc-status as the RustBill web client reads it: from the response headers only."""
        return self.headers.get("grpc-status")

    @property
    def message(self) -> str | None:
        return self.headers.get("grpc-message")

    def reply(self, cls: type[Message]) -> Message:
        data = [d for flag, d in self.frames if not flag & 0x80]
        assert data, f"no data frame (status {self.status} {self.message!r})"
        return cls.FromString(data[0])

    def trailers(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for flag, d in self.frames:
            if flag & 0x80:
                for line in d.decode().split("\r\n"):
                    k, _, v = line.partition(":")
                    if k:
                        out[k.strip().lower()] = v.strip()
        return out


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 5 <= len(body):
        flag, n = struct.unpack(">BI", body[i : i + 5])
        out.append((flag, body[i + 5 : i + 5 + n]))
        i += 5 + n
    assert i == len(body), "trailing bytes after the last frame"
    return out


def grpc_web(base: str, path: str, msg: Message | bytes, token: str | None = None, **headers: str) -> GrpcWebReply:
    h = dict(GRPC_WEB)
    if token:
        h["authorization"] = f"Bearer {token}"
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    body = msg if isinstance(msg, bytes) else frame(msg)  # bytes: the raw body, as sent
    r = httpx.post(base + path, content=body, headers=h, timeout=30, verify=TLS)
    return GrpcWebReply(r.status_code, r.headers, parse_frames(r.content))


def connect_json(
    base: str, path: str, payload: dict[str, Any] | str, token: str | None = None, **headers: str
) -> httpx.Response:
    h = {"content-type": "application/json"}
    if token:
        h["authorization"] = f"Bearer {token}"
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return httpx.post(base + path, content=body, headers=h, timeout=30, verify=TLS)
