"""Real browser-ecosystem clients against a real server: connect-es's gRPC-Web and Connect
transports (run from Node), and a page of another origin calling the API from Chromium (CORS).

Node packages come from tests/web/package-lock.json (``npm ci``, done by scripts/test); Chromium is
Debian's (scripts/system-deps). Both are required: a missing one fails, it is never skipped."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import ADMIN_PASSWORD, ROOT, SHIPPED_PLUGINS, Databases, ServerProcess

WEB = Path(__file__).resolve().parent / "web"


def descriptor_set(out: Path) -> Path:
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", "--include_imports", f"--descriptor_set_out={out}"]
    assert protoc.main([*args, *protos]) == 0
    return out


class _Page(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[tuple[ServerProcess, str]]:
    """A RustBill server that allows one other origin, and a static page server on that origin."""
    pages = tmp_path_factory.mktemp("pages")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Page(*a, directory=str(pages)))
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    srv = ServerProcess(
        tmp_path_factory.mktemp("cors"),
        databases.new(),
        plugins=[SHIPPED_PLUGINS / "demo_cloud.py"],
        env={"RUSTBILL_HTTP__CORS_ORIGINS": json.dumps([origin])},
    )
    srv.start()
    (pages / "page.html").write_text(PAGE)
    yield srv, origin
    srv.stop()
    httpd.shutdown()
    httpd.server_close()


def test_connect_es_grpc_web_and_connect_transports(cors_server: tuple[ServerProcess, str], tmp_path: Path) -> None:
    srv, _ = cors_server
    node = shutil.which("node")
    assert node, "node is required (scripts/system-deps installs it)"
    assert (WEB / "node_modules" / "@connectrpc" / "connect-web").is_dir(), (
        "run npm ci in tests/web (scripts/test does)"
    )
    res = subprocess.run(
        [node, str(WEB / "client.mjs"), str(descriptor_set(tmp_path / "rb.pb")), srv.http_url, ADMIN_PASSWORD],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    results = json.loads(res.stdout)
    for transport, r in results.items():
        assert r["wrongPassword"] == {"code": "Unauthenticated", "message": "invalid username or password"}, transport
        assert r["login"] == {"role": "admin", "expiresIn": 900, "adminPath": "/admin/"}, transport
        assert r["me"] == "admin" and r["plugins"] == ["demo_cloud"], transport
        assert r["badId"] == {"code": "InvalidArgument", "message": "id is not a valid UUID: 'not a uuid'"}, transport
        assert r["noToken"]["code"] == "Unauthenticated", transport
        assert r["refreshed"] is True, transport
    assert set(results) == {"grpcWeb", "connectJson", "connectBinary"}


# The page calls the API the way RustBill's web client does: fetch, one gRPC-Web frame, the status
# read from the response headers only; and once with Connect JSON.
PAGE = """<!doctype html><meta charset="utf-8"><title>cors</title><script>
function frame(bytes) {
  const b = new Uint8Array(5 + bytes.length);
  new DataView(b.buffer).setUint32(1, bytes.length);
  b.set(bytes, 5);
  return b;
}
function str(field, s) { const e = new TextEncoder().encode(s); return [field << 3 | 2, e.length, ...e]; }
async function grpcWeb(api, path, body, token) {
  const headers = {"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"};
  if (token) headers["Authorization"] = "Bearer " + token;
  const r = await fetch(api + path, {method: "POST", headers, body: frame(new Uint8Array(body))});
  const bytes = new Uint8Array(await r.arrayBuffer());
  return {status: r.headers.get("grpc-status"), message: r.headers.get("grpc-message"), length: bytes.length};
}
async function run(api) {
  const out = {};
  const login = await fetch(api + "/rustbill.identity.IdentityService/Login", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({username: "admin", password: PASSWORD})});
  out.loginStatus = login.status;
  const token = (await login.json()).accessToken;
  out.list = await grpcWeb(api, "/rustbill.integration.IntegrationService/ListPlugins", [], token);
  out.denied = await grpcWeb(api, "/rustbill.integration.IntegrationService/ListPlugins", [], "");
  out.badId = await grpcWeb(api, "/rustbill.integration.IntegrationService/GetPlugin", str(1, "x y"), token);
  return out;
}
</script>"""


def test_a_page_of_another_origin_calls_the_api_in_chromium(cors_server: tuple[ServerProcess, str]) -> None:
    from playwright.sync_api import sync_playwright

    srv, origin = cors_server
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required (scripts/system-deps installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.goto(f"{origin}/page.html")
            out = page.evaluate(f"PASSWORD = {json.dumps(ADMIN_PASSWORD)}; run({json.dumps(srv.http_url)})")
            assert out["loginStatus"] == 200
            # A reply: no status header (it is in the trailer frame) and a body.
            assert out["list"]["status"] is None and out["list"]["length"] > 5
            # Errors: the status is readable from the headers across origins (exposed), no body.
            assert out["denied"] == {
                "status": "16", "message": "missing authorization metadata (expected 'Bearer <token>')", "length": 0,
            }  # fmt: skip
            assert out["badId"] == {"status": "3", "message": "id is not a valid UUID: 'x y'", "length": 0}
            # A page of an origin that is not allowed cannot read anything.
            other = browser.new_page()
            other.goto(srv.http_url + "/healthz")  # same host, other port: another origin
            err = other.evaluate(
                f"fetch({json.dumps(srv.http_url.replace('127.0.0.1', 'localhost'))} + '/healthz')"
                ".then(() => 'read', e => 'blocked: ' + e.message)"
            )
            assert err.startswith("blocked"), err
        finally:
            browser.close()
