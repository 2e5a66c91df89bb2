"""The native gRPC edge and the Dispatcher in process: a grpc.aio server on port 0 with the real
permission table, the real AuthService on a temporary SQLite database, and servicers written here
(the edge's contract is "(request, call) -> reply, or a RustBillError"; what the real servicers do
is tested through server processes)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc import aio

from rustbill.auth import AuthService
from rustbill.config import load_settings
from rustbill.db import Database
from rustbill.errors import Code, InvalidArgument, NotFound, RustBillError, Unavailable
from rustbill.metrics import Metrics
from rustbill.pb import integration_pb2 as pb
from rustbill.services import dispatch as dispatch_module
from rustbill.services.dispatch import Call, Dispatcher
from rustbill.services.grpc_edge import grpc_handlers
from rustbill.services.permissions import SERVICES
from rustbill.services.status import connect_code, grpc_code

GET_PLUGIN = "/rustbill.integration.IntegrationService/GetPlugin"
LIST_PROVIDERS = "/rustbill.integration.IntegrationService/ListProviders"


class Servicer:
    """Every method of every service: answers with what ``behaviour`` says for that method name."""

    def __init__(self, behaviour: dict[str, Any], seen: list[tuple[str, Any, Call]]) -> None:
        self._behaviour = behaviour
        self._seen = seen

    def __getattr__(self, name: str) -> Any:
        async def handler(request: Any, call: Call) -> Any:
            self._seen.append((name, request, call))
            outcome = self._behaviour.get(name)
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not None:
                return outcome
            return call.method.output()

        return handler


class Edge:
    def __init__(self, channel: aio.Channel, behaviour: dict[str, Any], seen: list[Any], tokens: dict[str, str]):
        self.channel = channel
        self.behaviour = behaviour
        self.seen = seen
        self.tokens = tokens

    async def call(self, path: str, body: bytes, user: str | None = "admin") -> tuple[grpc.StatusCode, str, dict]:
        md = (("authorization", f"Bearer {self.tokens[user]}"),) if user else ()
        method = self.channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        try:
            await method(body, metadata=md, timeout=10)
        except aio.AioRpcError as exc:
            return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ())
        return grpc.StatusCode.OK, "", {}


@pytest.fixture(scope="module")
async def edge(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Edge]:
    folder: Path = tmp_path_factory.mktemp("edge")
    url = f"sqlite:///{folder / 'edge.sqlite3'}"
    db = Database(url)
    await db.migrate()
    auth = AuthService(db, load_settings(None, db={"url": url}, data={"dir": str(folder)}))
    await auth.create_user("admin", "admin", password="admin-password-1")
    await auth.create_user("carol", "customer", password="carol-password-1")
    tokens = {u: await auth.create_token(u) for u in ("admin", "carol")}
    behaviour: dict[str, Any] = {}
    seen: list[Any] = []
    servicer = Servicer(behaviour, seen)
    d = Dispatcher(auth, {svc.full_name: servicer for svc in SERVICES}, Metrics())
    server = aio.server()
    server.add_generic_rpc_handlers(grpc_handlers(d))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Edge(channel, behaviour, seen, tokens)
    await server.stop(None)
    await db.dispose()


@pytest.fixture(autouse=True)
def _reset(edge: Edge) -> None:
    edge.behaviour.clear()
    edge.seen.clear()


async def test_a_good_request_reaches_the_servicer_with_its_caller(edge: Edge) -> None:
    body = pb.GetPluginRequest(id="kvm").SerializeToString()
    assert (await edge.call(GET_PLUGIN, body))[0] is grpc.StatusCode.OK
    [(name, request, call)] = edge.seen
    assert (name, request.id, call.edge, call.principal.username) == ("GetPlugin", "kvm", "grpc", "admin")


async def test_no_credential_and_a_customer_are_refused_before_the_servicer(edge: Edge) -> None:
    body = b""  # (EmptyRequest)
    code, message, _ = await edge.call(LIST_PROVIDERS, body, user=None)
    assert code is grpc.StatusCode.UNAUTHENTICATED and "authorization" in message.lower()
    code, message, _ = await edge.call(LIST_PROVIDERS, body, user="carol")
    assert code is grpc.StatusCode.PERMISSION_DENIED and "admin" in message
    assert edge.seen == []


async def test_an_undecodable_request_is_invalid_argument_and_one_warning_a_minute(
    edge: Edge, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [10_000.0]
    monkeypatch.setattr(dispatch_module.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.WARNING, logger="rustbill.rpc")
    for _ in range(20):
        code, message, _ = await edge.call(GET_PLUGIN, b"\x0a\x03\xff\xfe\xfd")
        assert (code, message) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "request is not a valid rustbill.integration.GetPluginRequest",
        )
    lines = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert lines == [
        f"undecodable request to {GET_PLUGIN} from 127.0.0.1 over grpc: "
        "5 bytes that are not a rustbill.integration.GetPluginRequest"
    ]
    assert not any(r.exc_info for r in caplog.records)
    clock[0] += 61
    await edge.call(GET_PLUGIN, b"\x08")
    lines = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(lines) == 2 and lines[1].endswith("(19 more from this address in the last minute)")
    assert edge.seen == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("plugin 'x' not found"), grpc.StatusCode.NOT_FOUND),
        (InvalidArgument("spec.cpu_cores must be > 0"), grpc.StatusCode.INVALID_ARGUMENT),
        (Unavailable("upstream down", retry_after=2.5), grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_a_domain_error_keeps_its_message_and_gets_its_status(
    edge: Edge, error: RustBillError, status: grpc.StatusCode
) -> None:
    edge.behaviour["GetPlugin"] = error
    code, message, trailers = await edge.call(GET_PLUGIN, pb.GetPluginRequest(id="x").SerializeToString())
    assert (code, message) == (status, error.message)
    if isinstance(error, Unavailable):
        assert trailers.get("retry-after") == "3"  # whole seconds, rounded up


async def test_an_unexpected_exception_is_internal_with_a_reference_and_no_traceback(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    edge.behaviour["GetPlugin"] = KeyError("secret internals")
    caplog.set_level(logging.ERROR, logger="rustbill.rpc")
    code, message, _ = await edge.call(GET_PLUGIN, pb.GetPluginRequest(id="x").SerializeToString())
    assert code is grpc.StatusCode.INTERNAL
    assert message.startswith("internal error (ref ") and "secret" not in message and "Traceback" not in message
    ref = message.split("ref ", 1)[1].split(")")[0]
    [record] = [r for r in caplog.records if ref in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


@pytest.mark.parametrize("code", list(Code))
def test_every_error_code_has_a_grpc_and_a_connect_status(code: Code) -> None:
    assert grpc_code(code).name == code.name
    assert connect_code(code).name == code.name.replace("CANCELLED", "CANCELED")  # (Connect's spelling)
