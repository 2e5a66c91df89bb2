"""The HTTP listener: every RPC over gRPC-Web and Connect with the same auth, permissions and
statuses as native gRPC; sign-in; CORS; bad input; /metrics, /healthz, /readyz.

gRPC-Web is checked the way RustBill's web client reads it: status only from the response headers,
the first frame as the reply (so every error must be trailers-only)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from helpers import ADMIN_PASSWORD, SHIPPED_PLUGINS, Databases, ServerProcess, md, raises_code, unique
from web import connect_json, frame, grpc_web

from rustbill.pb import common_pb2, identity_pb2, identity_pb2_grpc
from rustbill.pb import integration_pb2 as pb
from rustbill.services.permissions import PERMISSIONS, Access

ORIGIN = "https://console.example.com"
INTEGRATION = "/rustbill.integration.IntegrationService/"
IDENTITY = "/rustbill.identity.IdentityService/"
CONNECT_CODES = {
    "UNAUTHENTICATED": ("unauthenticated", 401),
    "PERMISSION_DENIED": ("permission_denied", 403),
    "INVALID_ARGUMENT": ("invalid_argument", 400),
    "NOT_FOUND": ("not_found", 404),
    "RESOURCE_EXHAUSTED": ("resource_exhausted", 429),
}


@pytest.fixture(scope="module")
def web_server(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path_factory.mktemp("web"),
        databases.new(),
        plugins=[SHIPPED_PLUGINS / "demo_cloud.py", SHIPPED_PLUGINS / "bank_memo.py"],
        env={
            "RUSTBILL_HTTP__CORS_ORIGINS": json.dumps([ORIGIN]),
            "RUSTBILL_AUTH__LOGIN_MAX_FAILURES_PER_USER": "3",
            "RUSTBILL_AUTH__LOGIN_WINDOW_SECONDS": "600",
        },
    )
    srv.start()
    srv.cli("user", "create", "alice", "--role", "customer", "--password", "alice-password")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(web_server: ServerProcess) -> str:
    r = connect_json(web_server.http_url, IDENTITY + "Login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["accessToken"])


@pytest.fixture(scope="module")
def alice(web_server: ServerProcess) -> str:
    r = connect_json(
        web_server.http_url, IDENTITY + "Login",
        {"username": "alice", "password": "alice-password", "userType": "customer"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["accessToken"])


# ---------------------------------------------------------------- sign-in


def test_login_over_connect_json_then_call_with_the_token(web_server: ServerProcess) -> None:
    r = connect_json(web_server.http_url, IDENTITY + "Login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200
    body = r.json()
    assert body["user"]["username"] == "admin" and body["user"]["role"] == "admin"
    assert body["adminPath"] == "/admin/"
    assert int(body["expiresIn"]) == 900
    assert body["refreshToken"].startswith("rbr_")
    # The refresh token also comes as a cookie page scripts cannot read, sent only to IdentityService.
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/rustbill.identity.IdentityService/" in cookie
    me = connect_json(web_server.http_url, IDENTITY + "GetMe", {}, body["accessToken"])
    assert me.status_code == 200 and me.json()["user"]["username"] == "admin"
    # The same token works on native gRPC.
    plugins = web_server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(body["accessToken"]))
    assert {p.plugin_id for p in plugins.plugins} == {"demo_cloud", "bank_memo"}


def test_login_on_native_grpc_too(web_server: ServerProcess) -> None:
    stub = identity_pb2_grpc.IdentityServiceStub(web_server.channel())
    reply = stub.Login(identity_pb2.LoginRequest(username="alice", password="alice-password", user_type="customer"))
    assert reply.user.role == "customer" and reply.user.customer_id == reply.user.id and reply.admin_path == ""
    me = stub.GetMe(common_pb2.EmptyRequest(), metadata=md(reply.access_token))
    assert me.user.username == "alice"
    with raises_code(grpc.StatusCode.PERMISSION_DENIED, "requires the admin role"):
        web_server.stub().ListPlugins(pb.ListPluginsRequest(), metadata=md(reply.access_token))
    with raises_code(grpc.StatusCode.PERMISSION_DENIED, "not an admin"):
        stub.Login(identity_pb2.LoginRequest(username="alice", password="alice-password", user_type="admin"))


def test_wrong_password_and_unknown_user_read_the_same(web_server: ServerProcess) -> None:
    for user in ("alice", unique("nobody")):
        r = connect_json(web_server.http_url, IDENTITY + "Login", {"username": user, "password": "not-it"})
        assert r.status_code == 401
        assert r.json() == {"code": "unauthenticated", "message": "invalid username or password"}
    web_server.wait_for_log(r"sign-in failed: user='nobody-\w+' peer=127\.0\.0\.1 reason=no such user", timeout=10)


def test_failed_logins_are_rate_limited_per_user(web_server: ServerProcess) -> None:
    name = unique("victim")
    web_server.cli("user", "create", name, "--password", "right-password")
    for _ in range(3):
        assert (
            connect_json(web_server.http_url, IDENTITY + "Login", {"username": name, "password": "x"}).status_code
            == 401
        )
    r = connect_json(web_server.http_url, IDENTITY + "Login", {"username": name, "password": "right-password"})
    assert r.status_code == 429
    assert r.json()["code"] == "resource_exhausted"
    assert re.match(r"too many failed sign-ins for this account; retry in \d+ s", r.json()["message"])
    assert 500 <= int(r.headers["retry-after"]) <= 601
    # The same on gRPC, with the delay in the trailing metadata.
    stub = identity_pb2_grpc.IdentityServiceStub(web_server.channel())
    with raises_code(grpc.StatusCode.RESOURCE_EXHAUSTED, "retry in"):
        stub.Login(identity_pb2.LoginRequest(username=name, password="right-password"))
    assert scrape(web_server)[("rustbill_login_failures_total", (("reason", "rate limited"),))] >= 2


def test_refresh_tokens_rotate_and_a_reused_one_revokes_the_login(web_server: ServerProcess) -> None:
    base = web_server.http_url
    first = connect_json(base, IDENTITY + "Login", {"username": "alice", "password": "alice-password"}).json()
    # The web client refreshes without an authorization header.
    r1 = connect_json(base, IDENTITY + "RefreshToken", {"refreshToken": first["refreshToken"]})
    assert r1.status_code == 200, r1.text
    second = r1.json()
    assert second["refreshToken"] != first["refreshToken"]
    assert connect_json(base, IDENTITY + "GetMe", {}, second["accessToken"]).status_code == 200
    # The first token again: someone replayed it. The whole login is revoked.
    again = connect_json(base, IDENTITY + "RefreshToken", {"refreshToken": first["refreshToken"]})
    assert again.status_code == 401 and "already used" in again.json()["message"]
    revoked = connect_json(base, IDENTITY + "RefreshToken", {"refreshToken": second["refreshToken"]})
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]


def test_refresh_and_logout_with_the_cookie(web_server: ServerProcess) -> None:
    with httpx.Client(base_url=web_server.http_url) as client:
        r = client.post(IDENTITY + "Login", json={"username": "alice", "password": "alice-password"})
        assert r.status_code == 200
        # No body token: the HttpOnly cookie is used.
        r2 = client.post(IDENTITY + "RefreshToken", json={})
        assert r2.status_code == 200, r2.text
        out = client.post(IDENTITY + "Logout", json={})
        assert out.status_code == 200 and "Max-Age=0" in out.headers["set-cookie"]  # the cookie is cleared
        r3 = httpx.post(
            web_server.http_url + IDENTITY + "RefreshToken", json={"refreshToken": r2.json()["refreshToken"]}
        )
        assert r3.status_code == 401 and "revoked" in r3.json()["message"]


def test_user_passwd_sets_a_password(web_server: ServerProcess) -> None:
    name = unique("pw")
    web_server.cli("user", "create", name)
    base = web_server.http_url
    assert connect_json(base, IDENTITY + "Login", {"username": name, "password": "new-password-1"}).status_code == 401
    res = subprocess_passwd(web_server, name, "new-password-1")
    assert res.returncode == 0, res.stderr
    assert connect_json(base, IDENTITY + "Login", {"username": name, "password": "new-password-1"}).status_code == 200
    short = subprocess_passwd(web_server, name, "short")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr


def subprocess_passwd(srv: ServerProcess, name: str, password: str):  # type: ignore[no-untyped-def]
    """``rustbill user passwd NAME --password-stdin`` (a process of its own, see helpers.run_cli)."""
    from helpers import run_cli

    return run_cli(["user", "passwd", name, "--password-stdin"], cwd=srv.workdir, env=srv.env, stdin=password + "\n")


# ---------------------------------------------------------------- gRPC-Web


def test_grpc_web_call_and_trailers(web_server: ServerProcess, admin: str) -> None:
    r = grpc_web(web_server.http_url, INTEGRATION + "ListPlugins", pb.ListPluginsRequest(), admin)
    assert r.http_status == 200
    assert r.headers["content-type"] == "application/grpc-web+proto"
    reply = r.reply(pb.ListPluginsResponse)
    assert {p.plugin_id for p in reply.plugins} == {"demo_cloud", "bank_memo"}  # type: ignore[attr-defined]
    assert r.trailers()["grpc-status"] == "0"


def test_grpc_web_errors_are_trailers_only(web_server: ServerProcess, admin: str) -> None:
    r = grpc_web(web_server.http_url, INTEGRATION + "GetPlugin", pb.GetPluginRequest(id="not a uuid"), admin)
    assert r.http_status == 200
    assert r.frames == []  # no body: nothing the client could take for a reply
    assert r.status == "3"
    # Percent-encoded only where the gRPC spec requires it: spaces stay spaces.
    assert r.message is not None and " " in r.message and "%20" not in r.message
    assert "id" in r.message


def test_a_wrong_password_over_grpc_web_is_an_error_in_the_headers(web_server: ServerProcess) -> None:
    r = grpc_web(web_server.http_url, IDENTITY + "Login", identity_pb2.LoginRequest(username="admin", password="nope"))
    assert (r.http_status, r.status, r.message, r.frames) == (200, "16", "invalid username or password", [])


def test_non_ascii_messages_are_percent_encoded_utf8(web_server: ServerProcess, admin: str) -> None:
    import urllib.parse

    req = pb.CreatePluginInterfaceRequest(plugin_def_id="0192a123-0000-7000-8000-000000000000", display_name="KVM-东京")
    r = grpc_web(web_server.http_url, INTEGRATION + "CreatePluginInterface", req, admin)
    assert r.status == "5"
    assert r.message is not None and r.message.isascii()
    assert "not found" in urllib.parse.unquote(r.message)


# ---------------------------------------------------------------- the same auth matrix on every edge


def _grpc_code(srv: ServerProcess, path: str, token: str | None) -> str:
    method = srv.channel().unary_unary(path, request_serializer=None, response_deserializer=None)
    try:
        method(b"", metadata=md(token) if token else None, timeout=30)
    except grpc.RpcError as exc:
        return exc.code().name  # type: ignore[attr-defined, no-any-return]
    return "OK"


def _grpc_web_code(srv: ServerProcess, path: str, token: str | None) -> str:
    r = grpc_web(srv.http_url, path, frame(b""), token)
    assert r.http_status == 200
    if r.status is None:  # a reply: the status is in the trailer frame
        return "OK" if r.trailers()["grpc-status"] == "0" else "?"
    return _GRPC_NAMES[int(r.status)]


_GRPC_NAMES = {c.value[0]: c.name for c in grpc.StatusCode}


def _connect_code(srv: ServerProcess, path: str, token: str | None) -> str:
    r = connect_json(srv.http_url, path, {}, token)
    if r.status_code == 200:
        return "OK"
    return str(r.json()["code"]).upper()


GUARDED = sorted(p for p, a in PERMISSIONS.items() if a is not Access.PUBLIC and not p.endswith("/RestartServer"))


@pytest.mark.parametrize("path", GUARDED)
def test_auth_matrix_is_the_same_on_every_edge(web_server: ServerProcess, alice: str, path: str) -> None:
    codes = {
        edge: (fn(web_server, path, None), fn(web_server, path, alice))
        for edge, fn in (("grpc", _grpc_code), ("grpc-web", _grpc_web_code), ("connect", _connect_code))
    }
    assert codes["grpc"][0] == "UNAUTHENTICATED", codes
    if PERMISSIONS[path] is Access.ADMIN:
        assert codes["grpc"][1] == "PERMISSION_DENIED", codes
    else:
        assert codes["grpc"][1] not in ("UNAUTHENTICATED", "PERMISSION_DENIED"), codes
    for edge in ("grpc-web", "connect"):
        assert codes[edge][0] == codes["grpc"][0], codes
        # A customer's call past the permission check fails the same way on every edge (e.g. an
        # empty interface id is INVALID_ARGUMENT) — compare the codes, not just the auth ones.
        assert codes[edge][1] == codes["grpc"][1], codes


# ---------------------------------------------------------------- bad input, like gRPC


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x00\x00\x00\x02\x08",
        b"\x00\x00\x00\x00\x05\x0a\x03\xff\xfe\xfd",
        b"\x00\x00\x00",
        b"\x40\x00\x00\x00\x00",
    ],
    ids=["truncated-varint", "bad-utf8", "short-frame", "bad-flags"],
)
def test_undecodable_grpc_web_bodies_are_invalid_argument(web_server: ServerProcess, admin: str, body: bytes) -> None:
    r = grpc_web(web_server.http_url, INTEGRATION + "GetPlugin", body, admin)
    assert (r.http_status, r.status, r.frames) == (200, "3", []), (r.status, r.message)
    assert "Traceback" not in (r.message or "")


def test_undecodable_native_grpc_request_is_invalid_argument(web_server: ServerProcess, admin: str) -> None:
    method = web_server.channel().unary_unary(
        INTEGRATION + "GetPlugin", request_serializer=None, response_deserializer=None
    )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, r"request is not a valid rustbill.integration.GetPluginRequest"):
        method(b"\x0a\x03\xff\xfe\xfd", metadata=md(admin), timeout=30)


def test_undecodable_requests_are_logged(web_server: ServerProcess, admin: str) -> None:
    # One WARNING per client address a minute (tests/unit/test_edge.py): the first of this file's
    # undecodable requests, a gRPC-Web one (the tests above, or this one's when it runs alone). (A
    # body whose gRPC-Web framing is broken is refused by connectrpc before any decoding: not logged.)
    r = grpc_web(web_server.http_url, INTEGRATION + "GetPlugin", b"\x00\x00\x00\x00\x05\x0a\x03\xff\xfe\xfd", admin)
    assert r.status == "3", r.message
    web_server.wait_for_log(r"WARNING .*undecodable request to ", timeout=10)  # (written by the log thread)
    lines = re.findall(r"WARNING .*undecodable request to .*", web_server.log)
    assert lines, web_server.log_tail()
    assert re.search(
        r"undecodable request to /rustbill\.integration\.IntegrationService/GetPlugin from "
        r"127\.0\.0\.1 over grpc-web: not a rustbill\.integration\.GetPluginRequest",
        lines[0],
    ), lines


def test_bad_connect_json_names_the_message(web_server: ServerProcess, admin: str) -> None:
    r = connect_json(web_server.http_url, INTEGRATION + "GetPlugin", "{not json", admin)
    assert r.status_code == 400 and r.json()["code"] == "invalid_argument"
    assert r.json()["message"].startswith("request is not a valid rustbill.integration.GetPluginRequest")
    r = connect_json(web_server.http_url, INTEGRATION + "GetPlugin", {"idd": "x"}, admin)
    assert r.status_code == 400 and "idd" in r.json()["message"]


def test_oversized_body_is_refused(web_server: ServerProcess, admin: str) -> None:
    big = frame(b"\x0a" + b"\x80\x80\x80\x03" + b"x" * (5 * 1024 * 1024))
    r = grpc_web(web_server.http_url, INTEGRATION + "GetPlugin", big, admin)
    assert r.status == "8" and r.frames == []


def test_unknown_path_is_404_and_wrong_method_405(web_server: ServerProcess, admin: str) -> None:
    assert (
        httpx.post(web_server.http_url + "/rustbill.integration.IntegrationService/Nope", content=b"").status_code
        == 404
    )
    r = httpx.get(
        web_server.http_url + INTEGRATION + "ListPlugins", headers={"content-type": "application/grpc-web+proto"}
    )
    assert r.status_code == 405 and r.headers["allow"] == "POST" and "called with POST" in r.text
    assert httpx.put(web_server.http_url + "/metrics").status_code == 405
    # curl without a content type (it sends a form): say what to send
    r = httpx.post(web_server.http_url + INTEGRATION + "ListPlugins", content=b"{}",
                   headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 415 and "application/json" in r.text and "application/json" in r.headers["accept-post"]


# ---------------------------------------------------------------- CORS


def test_cors_preflight_and_headers_on_errors(web_server: ServerProcess) -> None:
    pre = httpx.options(
        web_server.http_url + INTEGRATION + "ListProviders",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type,x-grpc-web",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()
    r = httpx.post(
        web_server.http_url + INTEGRATION + "ListProviders",
        content=frame(b""),
        headers={"origin": ORIGIN, "content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    assert r.headers["grpc-status"] == "16"
    assert r.headers["access-control-allow-origin"] == ORIGIN
    exposed = r.headers["access-control-expose-headers"].lower()
    assert "grpc-status" in exposed and "grpc-message" in exposed
    other = httpx.options(
        web_server.http_url + INTEGRATION + "ListProviders",
        headers={"origin": "https://evil.example.net", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers


# ---------------------------------------------------------------- operations endpoints


def test_metrics_count_rpcs_by_edge_and_plugin_calls(web_server: ServerProcess, admin: str) -> None:
    stub = web_server.stub()
    plugin = next(
        p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(admin)).plugins if p.plugin_id == "demo_cloud"
    )
    iface = stub.CreatePluginInterface(
        pb.CreatePluginInterfaceRequest(plugin_def_id=plugin.id, display_name=unique("m"), config_json="{}"),
        metadata=md(admin),
    ).interface
    stub.CheckPluginHealth(pb.CheckPluginHealthRequest(interface_id=iface.id), metadata=md(admin))
    grpc_web(web_server.http_url, INTEGRATION + "ListPlugins", pb.ListPluginsRequest(), admin)
    connect_json(web_server.http_url, INTEGRATION + "ListPlugins", {}, admin)
    samples = scrape(web_server)
    for edge in ("grpc", "grpc-web", "connect"):
        key = ("rustbill_rpc_requests_total", (("code", "OK"), ("edge", edge), ("method", "ListPlugins"),
                                               ("service", "rustbill.integration.IntegrationService")))  # fmt: skip
        assert samples.get(key, 0) >= 1, edge
    labels = (("edge", "grpc-web"), ("method", "ListPlugins"), ("service", "rustbill.integration.IntegrationService"))
    hist = ("rustbill_rpc_duration_seconds_count", labels)
    assert samples.get(hist, 0) >= 1
    call = (("function", "health_check"), ("outcome", "ok"), ("plugin", "demo_cloud"))
    assert samples.get(("rustbill_plugin_calls_total", call), 0) >= 1
    assert samples.get(("rustbill_plugin_call_duration_seconds_count", call[:1] + call[2:]), 0) >= 1
    health = [v for (name, labels), v in samples.items()
              if name == "rustbill_interface_healthy" and ("interface_id", iface.id) in labels]  # fmt: skip
    assert health == [1.0]


def scrape(srv: ServerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(srv.http_url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }


def test_healthz_and_readyz(web_server: ServerProcess) -> None:
    assert httpx.get(web_server.http_url + "/healthz").text == "ok"
    r = httpx.get(web_server.http_url + "/readyz")
    assert (r.status_code, r.text) == (200, "ready")


def test_no_http_listener_when_listen_is_empty(tmp_path: Path, databases: Databases) -> None:
    srv = ServerProcess(tmp_path, databases.new(), env={"RUSTBILL_HTTP__LISTEN": ""})
    try:
        srv.start()
        assert srv.http_port is None
        assert "HTTP (" not in srv.log
        time.sleep(0.1)
    finally:
        srv.stop()


def test_the_readme_curl_examples_work_as_printed(web_server: ServerProcess, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from helpers import ROOT

    assert shutil.which("curl"), "curl is required (scripts/system-deps installs it)"
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### From a browser or curl", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    script = "set -euo pipefail\n" + "\n".join(blocks)
    script = script.replace("<password>", ADMIN_PASSWORD).replace("127.0.0.1:8080", f"127.0.0.1:{web_server.http_port}")
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    listing = json.loads(res.stdout.split("HTTP/1.1", 1)[0])
    assert [p["pluginId"] for p in listing["plugins"]] == ["bank_memo"]
    assert "HTTP/1.1 200" in res.stdout and "content-type: application/grpc-web+proto" in res.stdout
    assert "grpc-status" not in res.stdout.split("HTTP/1.1", 1)[1]  # a reply: the status is in the trailer frame
    body = (tmp_path / "reply.bin").read_bytes()
    assert body[0] == 0 and body.endswith(b"\x80\x00\x00\x00\x10grpc-status: 0\r\n")  # data frame, trailer frame
