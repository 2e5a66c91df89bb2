"""The admin console at /admin, end to end: Debian's Chromium driven by Playwright against real
servers with the shipped plugins (and tests/plugins, among them t_hostile's hostile admin page).

Screenshots of every page (laptop and phone widths, English and Chinese) are written to a folder
that the first test prints (RUSTBILL_CONSOLE_SCREENSHOTS chooses it; default: pytest's temporary
folder, ``console-screenshots``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import grpc
import pytest
from helpers import (
    ADMIN_PASSWORD,
    ROOT,
    SHIPPED_PLUGINS,
    TEST_PLUGINS,
    Databases,
    ServerProcess,
    create_interface,
    md,
    raises_code,
    run_cli,
    unique,
)
from peers.webhook_receiver import WebhookReceiver, new_secret

from rustbill.console import CONSOLE_CSP, FRAME_CSP, STATIC
from rustbill.pb import drift_pb2, drift_pb2_grpc, order_pb2, product_pb2
from rustbill.pb import integration_pb2 as pb

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
LOGIN_TTL = 65  # the console refreshes 60 s before expiry: every 5 s here (its shortest wait)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    chosen = os.environ.get("RUSTBILL_CONSOLE_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.getbasetemp() / "console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, databases: Databases) -> Iterator[ServerProcess]:
    plugins = sorted(SHIPPED_PLUGINS.glob("*.py")) + sorted(TEST_PLUGINS.glob("*.py"))
    srv = ServerProcess(
        tmp_path_factory.mktemp("console"),
        databases.new(),
        plugins=plugins,
        env={
            "RUSTBILL_AUTH__LOGIN_TTL_SECONDS": str(LOGIN_TTL),
            "RUSTBILL_PLUGINS__CALL_TIMEOUT_SECONDS": "10",
        },
    )
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def admin(console_server: ServerProcess) -> str:
    return console_server.token("admin")


@pytest.fixture(scope="module")
def stub(console_server: ServerProcess) -> Any:
    return console_server.stub()


@pytest.fixture(scope="module")
def customer_password(console_server: ServerProcess) -> tuple[str, str]:
    name = unique("shopper")
    console_server.cli("user", "create", name, "--role", "customer")
    password = "customer-password-1"
    res = run_cli(["user", "passwd", name, "--password-stdin"], cwd=console_server.workdir, env=console_server.env,
                  stdin=f"{password}\n")  # fmt: skip
    assert res.returncode == 0, res.stderr
    return name, password


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is required (scripts/system-deps test installs it)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Console:
    """One browser context (own cookies and storage) on the console of ``server``."""

    def __init__(
        self,
        browser: Any,
        server: ServerProcess,
        shots: Path,
        *,
        viewport: dict[str, int] = LAPTOP,
        locale: str = "en-US",
    ) -> None:
        self.server = server
        self.shots = shots
        self.context = browser.new_context(viewport=viewport, locale=locale)
        self.context.set_default_timeout(30_000)
        self.problems: list[str] = []
        # The console's own document must not break its Content-Security-Policy (plugin frames do,
        # on purpose, in the hostile test: they are not the console).
        self.context.expose_binding("rbCspViolation", lambda source, text: self.problems.append(text))
        self.context.add_init_script(
            "if (window === window.top) document.addEventListener('securitypolicyviolation', (e) =>"
            " window.rbCspViolation(`CSP violation in the console: ${e.violatedDirective} ${e.blockedURI}`));"
        )
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))

    @property
    def base(self) -> str:
        return f"{self.server.http_url}/admin/"

    def open(self) -> None:
        self.page.goto(self.base)
        self.page.wait_for_selector("input[name=username], .topbar")

    def sign_in(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        self.open()
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)
        self.page.press("input[name=password]", "Enter")  # Enter submits

    def signed_in(self) -> None:
        self.sign_in()
        self.page.wait_for_selector(".topbar")
        self.ready()

    def go(self, route: str) -> None:
        self.page.evaluate("r => { location.hash = r; }", f"#{route}")
        self.ready(route)

    def ready(self, route: str | None = None) -> None:
        """Waits until the page of ``route`` (or whatever page) has finished loading."""
        if route is None:  # the page the address now names
            self.page.wait_for_function(
                "() => { const m = document.querySelector('main');"
                " return !!m && !!m.dataset.route && '#' + m.dataset.route === (location.hash || '#/plugins'); }"
            )
        else:
            self.page.wait_for_selector(f'main[data-route="{route}"]')
        state = self.page.get_attribute("main", "data-state")
        assert state == "ready", f"page failed: {self.page.inner_text('main')}"

    def shot(self, name: str) -> None:
        # From the top, so that the sticky bar is where a person sees it in a full-page picture.
        self.page.evaluate("window.scrollTo(0, 0)")
        self.page.wait_for_timeout(150)  # let fonts and transitions settle
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def dialog_button(self, label: str) -> Any:
        return self.page.locator("dialog[open] button", has_text=label)

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def console(browser: Any, console_server: ServerProcess, shots: Path) -> Iterator[Console]:
    c = Console(browser, console_server, shots)
    yield c
    c.close()


def _iface(stub: Any, token: str, iid: str) -> Any:
    return stub.GetPluginInterface(pb.GetPluginInterfaceRequest(interface_id=iid), metadata=md(token)).interface


def _action(stub: Any, token: str, iid: str, function: str, **args: Any) -> Any:
    req = pb.CallPluginActionRequest(interface_id=iid, function=function, args_json=json.dumps(args))
    return json.loads(stub.CallPluginAction(req, metadata=md(token), timeout=30).result_json)


def _text(page: Any, selector: str) -> str:
    return " ".join(page.inner_text(selector).split())


def _hash_id(page: Any, pattern: str) -> str:
    page.wait_for_url(re.compile(pattern))
    m = re.search(UUID, page.url)
    assert m, page.url
    return m.group(0)


# ---------------------------------------------------------------- static files and headers


def _git_files() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", "--", "src/rustbill/console/static"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return {line for line in out.splitlines() if line}


_REFERENCE = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']([^"']+)["'])"""  # HTML attributes
    r"""|(?:\bimport\s[^"';]*?from\s*["']([^"']+)["'])"""  # import … from "…"
    r"""|(?:\bimport\s*\(\s*["']([^"']+)["']\s*\))"""  # import("…")
    r"""|(?:\bimport\s*["']([^"']+)["'])"""  # import "…"
    r"""|(?:\burl\(\s*["']?([^"')]+)["']?\s*\))"""  # CSS url(…)
    r"""|(?:@import\s*["']([^"']+)["'])"""  # CSS @import "…"
    r"""|(?:\bfrom\s*["'](https?:[^"']+)["'])"""
)


def test_console_files_reference_only_committed_files() -> None:
    """Every file the console loads is in the repository (no CDN, no build output left out)."""
    tracked = _git_files()
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert files, "no console files"
    problems: list[str] = []
    for path in files:
        rel = str(path.relative_to(ROOT))
        if rel not in tracked:
            problems.append(f"{rel} is not committed")
        if path.suffix not in (".html", ".js", ".css", ".svg"):
            continue
        text = path.read_text()
        # No address outside this server (the SVG's XML namespace is a name, not a request).
        for url in re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"')]*", text):
            if url != "http://www.w3.org/2000/svg":
                problems.append(f"{rel} refers to {url}")
        for groups in _REFERENCE.findall(text):
            ref = next(g for g in groups if g)
            if ref.startswith(("#", "data:")):
                continue
            if re.match(r"^[a-z][a-z0-9+.-]*:", ref) or ref.startswith("//"):
                problems.append(f"{rel} loads {ref} from elsewhere")
                continue
            target = (path.parent / ref.split("?")[0].split("#")[0]).resolve()
            if ref.startswith("/"):
                problems.append(f"{rel}: {ref} should be relative to /admin/")
                continue
            try:
                target_rel = str(target.relative_to(ROOT))
            except ValueError:
                problems.append(f"{rel}: {ref} is outside the repository")
                continue
            if target_rel not in tracked:
                problems.append(f"{rel}: {ref} -> {target_rel} is not a committed file")
    assert problems == []


def test_every_message_has_a_chinese_translation() -> None:
    js = STATIC / "js"
    zh_text = (js / "zh.js").read_text()
    zh = set(json.loads(f'"{k}"') for k in re.findall(r'^\s*"((?:[^"\\]|\\.)*)":', zh_text, re.M))
    used: dict[str, str] = {}
    for path in sorted(js.rglob("*.js")):
        if path.name == "zh.js":
            continue
        for key in re.findall(r'\b(?:t|N_)\(\s*"((?:[^"\\]|\\.)*)"', path.read_text()):
            used.setdefault(json.loads(f'"{key}"'), path.name)
    assert len(used) > 200
    missing = {k: f for k, f in used.items() if k not in zh}
    assert missing == {}
    unused = zh - set(used) - {"Error"}
    assert unused == set(), "translations nobody uses"


def test_headers_csp_and_redirects(console_server: ServerProcess) -> None:
    base = console_server.http_url

    def get(path: str) -> Any:
        return urlopen(Request(base + path), timeout=10)

    with get("/admin/") as r:
        html = r.read().decode()
        assert r.headers["content-security-policy"] == CONSOLE_CSP
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    # The page carries the policy too, so that it holds wherever the files are served from; it has
    # no inline script and no inline event handler.
    assert '<meta http-equiv="Content-Security-Policy"' in html and "script-src 'self'" in html
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"\son[a-z]+\s*=", html) == []
    for path in ("/admin/js/app.js", "/admin/console.css"):
        with get(path) as r:
            assert r.headers["content-security-policy"] == CONSOLE_CSP
    with get("/admin/plugin-frame.html") as r:
        assert r.headers["content-security-policy"] == FRAME_CSP
        assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert FRAME_CSP.startswith("sandbox allow-scripts allow-forms;") and "connect-src 'none'" in FRAME_CSP
    assert "'unsafe-inline'" not in CONSOLE_CSP and "script-src 'self'" in CONSOLE_CSP
    for path in ("/", "/admin"):
        with get(path) as r:  # urllib follows the redirect
            assert r.url == base + "/admin/"


def test_readme_says_where_the_console_is() -> None:
    from rustbill.config import HttpSettings

    section = (ROOT / "README.md").read_text().split("## Admin console", 1)[1].split("\n## ", 1)[0]
    assert "./scripts/serve" in section
    assert f"http://{HttpSettings().listen}/admin/" in section  # the default listener


def test_builtin_admin_pages_use_the_sdk_bridge() -> None:
    """One bridge: the page side comes from sdk.admin_bridge_script(); no plugin has its own copy."""
    from rustbill import sdk

    assert "rustbill:action" in sdk.admin_bridge_script() and "rustbill:result" in sdk.admin_bridge_script()
    for pid in ("webhook", "email", "yipay", "bank_transfer", "kvm", "incus"):
        src = (SHIPPED_PLUGINS / f"{pid}.py").read_text()
        assert "sdk.admin_bridge_script()" in src, pid
    for path in sorted(SHIPPED_PLUGINS.glob("*.py")):
        src = path.read_text()
        assert "postMessage" not in src and "rustbill:call-action" not in src, path.name


def test_builtin_page_scripts_run(browser: Any) -> None:
    """The page scripts of the built-in admin pages parse and run with the SDK's bridge (their
    pages' elements absent: nothing is bound, nothing throws)."""
    from rustbill import sdk
    from rustbill.plugins import load_plugin

    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        for pid in ("webhook", "email", "yipay", "bank_transfer", "kvm", "incus"):
            path = SHIPPED_PLUGINS / f"{pid}.py"
            module = load_plugin(path, path.read_bytes(), pid).module
            # (kvm and incus: the SDK's row buttons and their own form, as their admin_page puts them)
            script = getattr(module, "_PAGE_SCRIPT", None) or f"<script>\n{sdk.ITEM_LIST_JS}{module._FORM_JS}</script>"
            page.set_content(f"<!doctype html><body>{sdk.admin_bridge_script()}{script}</body>")
            assert page.evaluate("typeof window.rustbill.call") == "function", pid
            assert errors == [], (pid, errors)
    finally:
        page.close()


# ---------------------------------------------------------------- sign-in and session


def test_sign_in_refusals_session_and_sign_out(
    console: Console, console_server: ServerProcess, customer_password: tuple[str, str]
) -> None:
    page = console.page
    console.open()
    assert page.locator("h1").inner_text() == "Admin console"
    assert page.evaluate("document.activeElement.name") == "username"  # ready to type
    console.shot("sign-in")

    # Empty: said at once, nothing sent.
    page.click("button[type=submit]")
    assert "Enter your username and password." in page.inner_text(".signin-status")

    console.sign_in("admin", "not the password")
    page.wait_for_selector(".notice-error")
    assert page.inner_text(".notice-error") == "Wrong username or password."

    # A customer account is refused clearly, and gets no session.
    name, password = customer_password
    console.sign_in(name, password)
    page.wait_for_selector(".notice-error")
    assert "not an administrator" in page.inner_text(".notice-error")
    console.shot("sign-in-customer-refused")
    assert page.locator(".topbar").count() == 0

    # The admin gets in; the access token is kept in memory only.
    console.signed_in()
    assert page.inner_text(".whoami") == "admin"
    storage = page.evaluate("({local: {...localStorage}, session: {...sessionStorage}, cookie: document.cookie})")
    assert storage["session"] == {} and storage["cookie"] == ""  # the refresh cookie is HttpOnly
    assert set(storage["local"]) <= {"rustbill.console.lang"}
    cookies = {c["name"]: c for c in console.context.cookies()}
    refresh = cookies["rustbill_refresh"]
    assert refresh["httpOnly"] and refresh["sameSite"] == "Strict"
    assert refresh["path"] == "/rustbill.identity.IdentityService/"

    # The Content-Security-Policy holds: an injected inline script does not run (and is reported).
    ran = page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
        " document.head.append(s); return window.injected === 1; }"
    )
    assert ran is False
    page.wait_for_timeout(200)
    assert any("script-src" in p for p in console.problems), console.problems
    console.problems.clear()

    # A reload resumes the session through the refresh cookie.
    page.reload()
    page.wait_for_selector(".topbar")
    console.ready("/plugins")

    # Sign out ends the login: a reload asks to sign in again.
    page.click("button:has-text('Sign out')")
    page.wait_for_selector("input[name=username]")
    assert "You are signed out." in page.inner_text(".signin-status")
    page.reload()
    page.wait_for_selector("input[name=username]")
    assert page.locator(".topbar").count() == 0


def test_the_session_is_refreshed_before_the_token_expires(console: Console) -> None:
    page = console.page
    refreshes: list[int] = []
    page.on(
        "response",
        lambda r: (
            refreshes.append(r.status) if r.url.endswith("/rustbill.identity.IdentityService/RefreshToken") else None
        ),
    )
    console.signed_in()
    refreshes.clear()  # the one tried on load, before signing in (no cookie yet: 401)
    # LOGIN_TTL is 65 s: the console refreshes 60 s before expiry, after 5 s.
    deadline = time.monotonic() + 25
    while len(refreshes) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    assert refreshes[:2] == [200, 200]
    console.go("/server")
    assert page.inner_text("h1") == "Server"


# ---------------------------------------------------------------- the plugin page


def test_webhook_interface_from_the_schema_form_to_its_admin_page(
    console: Console, stub: Any, admin: str, shots: Path
) -> None:
    secret = new_secret()
    receiver = WebhookReceiver(secret).start()
    try:
        _webhook_flow(console, stub, admin, receiver, secret)
    finally:
        receiver.stop()


def _webhook_flow(console: Console, stub: Any, admin: str, receiver: WebhookReceiver, secret: str) -> None:
    page = console.page
    console.signed_in()
    console.shot("plugins")
    card = page.locator("article[data-plugin=webhook]")
    assert "Webhook (Standard Webhooks)" in card.locator("h3").inner_text()
    assert "plugins/webhook.py" in card.inner_text() and "Admin page" in card.inner_text()
    card.locator("a", has_text="New interface").click()
    console.ready()
    assert page.evaluate("document.activeElement.name") == "display_name"

    # A required field left out: the server's error is shown at that field.
    name = unique("hooks")
    page.fill("input[name=display_name]", name)
    page.fill("input[name=url]", receiver.url)
    page.fill("input[name=timeout]", "5")
    page.press("input[name=timeout]", "Enter")  # Enter submits
    error = page.locator(".field[data-path=secret] .field-error")
    error.wait_for()
    assert error.inner_text() == "is required"
    assert page.get_attribute("input[name=secret]", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.name") == "secret"
    console.shot("interface-create-error")
    # Fixed, then created.
    page.fill("input[name=secret]", secret)
    page.click("button:has-text('Create interface')")
    iid = _hash_id(page, rf"#/interfaces/{UUID}$")
    console.ready(f"/interfaces/{iid}")
    assert page.inner_text("h1") == name
    stored = _iface(stub, admin, iid)
    assert stored.display_name == name and stored.enabled
    config = json.loads(stored.config_json)
    assert config["url"] == receiver.url and config["timeout"] == 5 and config["secret"] == "********"
    # The secret never comes back to the browser's form.
    assert page.input_value("input[name=secret]") == ""
    assert "configured" in (page.get_attribute("input[name=secret]", "placeholder") or "")
    assert secret not in page.content()

    # Health check: the result and when.
    page.click("button:has-text('Check health')")
    page.wait_for_selector(".health-box .badge-ok")
    assert "Healthy" in page.inner_text(".health-box") and "Last check" in page.inner_text(".health-box")
    assert any(d.json.get("event") == "ping" or d.json.get("type") == "ping" for d in receiver.deliveries)

    # Disable (confirmed; Escape cancels), then enable again.
    switch = page.locator(".head-actions button[role=switch]")
    switch.click()
    page.wait_for_selector("dialog[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog[open]", state="detached")
    assert switch.get_attribute("aria-checked") == "true" and _iface(stub, admin, iid).enabled
    switch.click()
    console.dialog_button("Disable").click()
    page.wait_for_selector(".head-actions button[role=switch][aria-checked=false]")
    assert not _iface(stub, admin, iid).enabled
    assert "This interface is disabled" in page.inner_text("main")
    console.shot("interface-disabled")
    switch.click()  # enabling needs no confirmation
    page.wait_for_selector(".head-actions button[role=switch][aria-checked=true]")
    assert _iface(stub, admin, iid).enabled

    # Edit without touching the secret: it is kept.
    page.fill("input[name=max_attempts]", "2")
    page.click("button:has-text('Save changes')")
    page.wait_for_selector(".toast:has-text('is saved')")
    page.wait_for_function("document.querySelector('input[name=max_attempts]').value === '2'")
    config = json.loads(_iface(stub, admin, iid).config_json)
    assert config["max_attempts"] == 2 and config["secret"] == "********"
    # … and still signs with it (the receiver checks the signature).
    page.click("button:has-text('Check health')")
    page.wait_for_selector(".toast:has-text('is healthy')")
    # A bad value: the server's message at the field.
    page.fill("input[name=url]", "ftp://example.com/x")
    page.click("button:has-text('Save changes')")
    page.locator(".field[data-path=url] .field-error").wait_for()
    assert "does not match" in page.inner_text(".field[data-path=url] .field-error")
    console.shot("interface-edit-error")
    page.fill("input[name=url]", receiver.url)

    # The admin page, with its action run through the bridge. Leaving with unsaved changes asks first.
    page.click(".head-actions a:has-text('Admin page')")
    page.wait_for_selector("dialog[open]")
    console.dialog_button("Discard").click()
    console.ready(f"/interfaces/{iid}/page")
    frame = page.frame_locator("iframe.plugin-frame")
    frame.locator("h1").wait_for()
    before = len(receiver.deliveries)
    frame.locator("#send-test").click()
    out = frame.locator("#test-out[data-state=ok]")
    out.wait_for()
    result = json.loads(out.inner_text())
    assert result["delivered"] is True and result["status"] == 200
    assert len(receiver.deliveries) == before + 1 and receiver.deliveries[-1].headers["webhook-id"] == result["id"]
    log = page.locator("table.table-compact tbody tr").first
    assert "admin_send_test" in log.inner_text() and "OK" in log.inner_text()
    console.shot("interface-admin-page")

    # Delete: confirmed (Escape cancels); then gone.
    console.go(f"/interfaces/{iid}")
    page.click(".head-actions button:has-text('Delete')")
    page.wait_for_selector("dialog[open]")
    assert page.evaluate("document.activeElement.textContent") == "Cancel"  # destructive: focus on Cancel
    page.keyboard.press("Escape")
    assert _iface(stub, admin, iid).display_name == name
    page.click(".head-actions button:has-text('Delete')")
    console.dialog_button("Delete").click()
    console.ready("/plugins")
    with raises_code(grpc.StatusCode.NOT_FOUND):
        _iface(stub, admin, iid)


def test_schema_form_widgets_nested_errors_and_secrets(console: Console, stub: Any, admin: str) -> None:
    """Every kind of field of tests/plugins/t_form.py; an error in a nested object at its field; a
    nested secret kept on edit; values that cannot be sent are refused in the page."""
    page = console.page
    console.signed_in()
    page.locator("article[data-plugin=t_form] a", has_text="New interface").click()
    console.ready()
    form = page.locator("main form")
    # Widgets, labels, defaults.
    assert form.locator("select[name=mode]").input_value() == "1"  # "safe", the default (index 1)
    assert form.locator("select[name=mode] option").all_inner_texts() == ["fast", "safe", "off"]
    assert form.locator("input[name=retries]").get_attribute("type") == "number"
    assert form.locator("input[name=retries]").input_value() == "2"
    assert form.locator("input[name=ratio]").get_attribute("step") == "any"
    assert form.locator("input[name=verbose]").is_checked()
    assert form.locator("textarea[name=tags]").count() == 1 and "One value per line." in form.inner_text()
    assert form.locator(".check-group input[type=checkbox]").count() == 3
    assert form.locator("input[name=token]").get_attribute("type") == "password"
    smtp = form.locator("fieldset[data-path=smtp]")
    assert smtp.locator("legend").inner_text().startswith("SMTP server")
    assert smtp.locator("input[name='smtp.port']").input_value() == "587"
    assert smtp.locator("input[name='smtp.password']").get_attribute("type") == "password"
    assert form.locator("textarea[name=limits]").count() == 1  # a map: JSON
    name_id = page.get_attribute("input[name=name]", "id")
    assert page.inner_text(f"label[for='{name_id}']").replace(" ", "") == "Name*name"  # labelled, required

    name = unique("form")
    page.fill("input[name=display_name]", name)
    page.fill("input[name=name]", "demo")
    page.fill("textarea[name=tags]", "a\n\n  b  \n")
    form.locator(".check-group label:has-text('sms') input").check()
    page.fill("input[name=ratio]", "0.25")
    page.fill("input[name=token]", "tok-secret-1")
    page.fill("input[name='smtp.password']", "smtp-secret-1")
    # Not JSON: refused in the page, at its field.
    page.fill("textarea[name=limits]", "{not json")
    page.click("button:has-text('Create interface')")
    page.locator(".field[data-path=limits] .field-error").wait_for()
    assert "is not valid JSON" in page.inner_text(".field[data-path=limits] .field-error")
    page.fill("textarea[name=limits]", '{"daily": 10}')
    # The nested required field is missing: the server names config_json.smtp.host.
    page.click("button:has-text('Create interface')")
    nested = page.locator(".field[data-path='smtp.host'] .field-error")
    nested.wait_for()
    assert nested.inner_text() == "is required"
    assert "config_json.smtp.host: is required" in page.inner_text(".form-status")
    console.shot("interface-create-nested-error")
    page.fill("input[name='smtp.host']", "mail.example.com")
    page.click("button:has-text('Create interface')")
    iid = _hash_id(page, rf"#/interfaces/{UUID}$")
    console.ready(f"/interfaces/{iid}")
    config = json.loads(_iface(stub, admin, iid).config_json)
    for secret in ("token",):
        assert config.pop(secret) == "********"
    assert config["smtp"].pop("password") == "********"
    assert config == {
        "name": "demo", "mode": "safe", "retries": 2, "ratio": 0.25, "verbose": True, "tags": ["a", "b"],
        "channels": ["mail", "sms"], "smtp": {"host": "mail.example.com", "port": 587}, "limits": {"daily": 10},
    }  # fmt: skip

    # Edit: both secrets are "configured", never shown; untouched they are kept, a new value replaces.
    for sel in ("input[name=token]", "input[name='smtp.password']"):
        assert page.input_value(sel) == "" and "configured" in (page.get_attribute(sel, "placeholder") or "")
    assert "tok-secret-1" not in page.content() and "smtp-secret-1" not in page.content()
    page.fill("input[name='smtp.password']", "smtp-secret-2")
    page.locator("input[name=verbose]").uncheck()
    page.fill("input[name=retries]", "")
    page.click("button:has-text('Save changes')")
    page.wait_for_selector(".toast:has-text('is saved')")
    config = json.loads(_iface(stub, admin, iid).config_json)
    assert config["token"] == "********" and config["smtp"]["password"] == "********"  # write-only, kept
    assert config["verbose"] is False and "retries" not in config  # emptied: left out (the default applies)
    # A value out of range: the server's message at the nested field.
    page.fill("input[name='smtp.port']", "70000")
    page.click("button:has-text('Save changes')")
    page.locator(".field[data-path='smtp.port'] .field-error").wait_for()
    assert "70000" in page.inner_text(".field[data-path='smtp.port'] .field-error")
    console.shot("interface-edit-nested-error")


def test_plugin_list_toggle_health_and_refused_delete(console: Console, stub: Any, admin: str) -> None:
    """The rows of the plugin page: toggle, health, and a delete the server refuses (instances)."""
    cloud = create_interface(stub, admin, "demo_cloud", "{}", unique("cloud-row"))
    stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(
            interface_id=cloud.id, server_spec=order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10)
        ),
        metadata=md(admin),
    )
    page = console.page
    console.signed_in()
    row = page.locator(f"tr[data-interface='{cloud.id}']")
    # (a new interface is checked at once in the background, so it may already show a result)
    row.locator("button:has-text('Check health')").click()
    row.locator(".badge-ok").wait_for()
    assert "Healthy" in row.inner_text() and "checked just now" in row.inner_text()
    row.locator("button[role=switch]").click()
    console.dialog_button("Disable").click()
    row.locator("button[role=switch][aria-checked=false]").wait_for()
    assert not _iface(stub, admin, cloud.id).enabled
    row.locator("button[role=switch]").click()
    row.locator("button[role=switch][aria-checked=true]").wait_for()
    # FAILED_PRECONDITION from the server, said plainly; nothing deleted.
    row.locator("button:has-text('Delete')").click()
    console.dialog_button("Delete").click()
    page.wait_for_selector("dialog[open] >> text=cannot be deleted")
    text = page.inner_text("dialog[open]")
    assert "still has 1 local instance" in text and "Disable the interface instead" in text
    console.shot("plugins-delete-refused")
    # … with the way out: disable it instead.
    console.dialog_button("Disable it").click()
    row.locator("button[role=switch][aria-checked=false]").wait_for()
    assert not _iface(stub, admin, cloud.id).enabled


def test_hostile_admin_page_reaches_only_its_own_actions(
    console: Console, console_server: ServerProcess, stub: Any, admin: str
) -> None:
    victim = create_interface(stub, admin, "t_hostile", json.dumps({"label": "victim"}), unique("victim"))
    hostile = create_interface(
        stub, admin, "t_hostile", json.dumps({"label": "hostile", "victim": victim.id}), unique("hostile")
    )
    page = console.page
    console.signed_in()
    url_before = None
    console.go(f"/interfaces/{hostile.id}/page")
    url_before = page.url
    frame = page.frame_locator("iframe.plugin-frame")
    report_el = frame.locator("#report[data-done='1']")
    report_el.wait_for(timeout=60_000)
    r = json.loads(report_el.inner_text())
    console.shot("hostile-admin-page")

    # Nothing of the console, its storage or its cookies is readable; no request gets out.
    for key in ("parentDocument", "topLocation", "parentFetch", "localStorage", "sessionStorage", "cookie"):
        assert r[key].startswith("blocked: SecurityError"), (key, r[key])
    assert r["popup"] in ("read: no window", "blocked: SecurityError") or r["popup"].startswith("blocked")
    assert r["topNavigation"].startswith("blocked") or r["topNavigation"] == "read: assigned"
    for key in ("fetchApi", "fetchRefresh", "xhr"):
        assert r[key]["ok"] is False, (key, r[key])
    # Its own admin_* action works, through the bridge.
    assert r["own"] == {"ok": True, "value": {"label": "hostile", "args_interface_id": None}}
    # Naming another interface is refused; an interface id in args stays an argument of its own action.
    for key in ("otherInterfaceKey", "otherInterfaceSnake"):
        assert r[key]["ok"] is False and r[key]["error"]["code"] == "invalid_argument", r[key]
    assert r["argsInterfaceId"]["ok"] is True
    assert r["argsInterfaceId"]["value"]["label"] == "hostile"
    assert r["argsInterfaceId"]["value"]["args_interface_id"] == victim.id
    # Only admin_* functions, and not admin_page.
    for key in ("send", "healthCheck", "adminPage"):
        assert r[key]["ok"] is False and r[key]["code"] == "permission_denied", (key, r[key])
    # The server's own rules still hold (args cannot override the configuration).
    assert r["overrideConfig"]["ok"] is False and r["overrideConfig"]["code"] == "invalid_argument"
    assert "label" in r["overrideConfig"]["message"]
    # Another message shape gets no answer.
    assert r["oldProtocol"] == {"noAnswer": True}

    # The victim's action never ran; the hostile interface's ran twice (own, and with args).
    assert _action(stub, admin, victim.id, "admin_marks") == {"label": "victim", "marks": 0}
    assert _action(stub, admin, hostile.id, "admin_marks") == {"label": "hostile", "marks": 2}
    # The console is where it was, and keeps no token where a page could find it.
    assert page.url == url_before
    assert page.evaluate("document.cookie") == ""
    assert set(page.evaluate("Object.keys(localStorage)")) <= {"rustbill.console.lang"}
    assert page.evaluate("sessionStorage.length") == 0
    # Every attempt is listed under the frame.
    log = page.inner_text("table.table-compact tbody")
    assert "permission_denied" in log and "invalid_argument" in log and "admin_mark" in log


# ---------------------------------------------------------------- the Upstream page


def test_upstream_page_sync_price_import_balance_status(console: Console, stub: Any, admin: str) -> None:
    seller = create_interface(stub, admin, "demo_cloud", "{}", unique("cloud-a"))
    cloud = create_interface(stub, admin, "demo_cloud", json.dumps({"currency": "EUR"}), unique("cloud-b"))
    resell = create_interface(stub, admin, "demo_upstream", json.dumps({"api_key": "k-123456"}), unique("resell"))
    # An instance opened through the first interface exists at the (shared, in-memory) demo provider;
    # the second interface has not imported it.
    opened = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(
            interface_id=seller.id, server_spec=order_pb2.ServerSpec(cpu_cores=1, memory_gb=1, disk_gb=10)
        ),
        metadata=md(admin),
    ).provider_instance_id
    listed = stub.SyncUpstreamInstances(pb.SyncUpstreamInstancesRequest(interface_id=cloud.id), metadata=md(admin))
    assert opened in [i.instance_id for i in listed.instances]

    page = console.page
    console.signed_in()
    console.go(f"/upstream/{cloud.id}")
    assert page.inner_text(".provider-head h2") == cloud.display_name
    page.wait_for_selector(".balance-amount")
    assert page.inner_text(".balance-amount") == "0.00 EUR"

    # Products: the counts of the sync and the list.
    page.click("button:has-text('Sync products')")
    page.wait_for_selector(".counts")
    counts = page.inner_text(".counts")
    assert re.search(r"3\s*created", counts) and re.search(r"0\s*unchanged", counts)
    assert page.locator("text=Demo medium").count() == 1
    page.click("button:has-text('Sync products')")
    page.wait_for_selector(".counts >> text=/3\\s*unchanged/")

    # Price: the spec template's form; a value out of range is refused at its field.
    calc = page.locator("section:has(h2:has-text('Price calculator'))")
    assert calc.locator("fieldset legend").first.inner_text() == "Compute"
    calc.locator("input[name=cpu_cores]").fill("100")
    calc.locator("button:has-text('Get price')").click()
    err = calc.locator("input[name=cpu_cores] ~ .field-error")
    err.wait_for()
    assert "cpu_cores must be between 1 and 64" in err.inner_text()
    calc.locator("input[name=cpu_cores]").fill("2")
    calc.locator("input[name=memory_gb]").fill("4")
    calc.locator("input[name=disk_gb]").fill("50")
    calc.locator("select[name=region]").select_option("eu-central")
    calc.locator("input[name=disk_gb]").press("Enter")
    page.wait_for_selector(".price-amount")
    assert _text(page, ".price") == "10.50 EUR / monthly"

    # Upstream instances: import the one not known here; a second import is "already imported".
    page.click("button:has-text('Sync instances')")
    row = page.locator(f"tr[data-instance='{opened}']")
    row.wait_for()
    assert "running" in row.inner_text()
    row.locator("button:has-text('Import')").click()
    row.locator(".badge-ok:has-text('Imported')").wait_for()
    with raises_code(grpc.StatusCode.ALREADY_EXISTS):
        stub.ImportUpstreamInstance(
            pb.ImportUpstreamInstanceRequest(interface_id=cloud.id, instance_id=opened), metadata=md(admin)
        )

    # Status lookup.
    page.fill("input[name=instance_id]", opened)
    page.press("input[name=instance_id]", "Enter")
    page.wait_for_selector("section:has(h2:has-text('Instance status')) dl")
    status = page.inner_text("section:has(h2:has-text('Instance status')) dl")
    assert "running" in status and "10.0.0." in status
    console.shot("upstream-first-party")

    # The seller's own instance: ALREADY_EXISTS means imported.
    console.go(f"/upstream/{seller.id}")
    page.click("button:has-text('Sync instances')")
    row = page.locator(f"tr[data-instance='{opened}']")
    row.locator("button:has-text('Import')").click()
    row.locator(".badge-ok:has-text('Already imported')").wait_for()

    # The reseller: a balance, no spec template (the standard fields), no instance listing.
    console.go(f"/upstream/{resell.id}")
    page.wait_for_selector(".balance-amount")
    assert page.inner_text(".balance-amount") == "100.00 USD"
    assert "no spec template" in page.inner_text("section:has(h2:has-text('Price calculator'))")
    page.fill("input[name=cpu_cores]", "2")
    page.fill("input[name=memory_gb]", "2")
    page.click("button:has-text('Get price')")
    page.wait_for_selector(".price-amount")
    assert _text(page, ".price") == "9.90 USD / monthly"  # (2*3.00 + 2*1.50) * 1.10
    page.click("button:has-text('Sync instances')")
    page.wait_for_selector("text=Not offered by this provider (sync_upstream_instances).")
    page.click("button:has-text('Sync products')")
    page.wait_for_selector("text=This provider offers no product list (sync_products).")
    console.shot("upstream-reseller")


def test_upstream_page_of_kvm_balance_not_offered(console: Console, stub: Any, admin: str) -> None:
    """The built-in kvm provider on libvirt's test driver: no upstream balance ("not offered", not an
    error), and the domains of the host as upstream instances."""
    iface = create_interface(stub, admin, "kvm", json.dumps({"uri": "test:///default"}), unique("kvm"))
    with raises_code(grpc.StatusCode.UNIMPLEMENTED):
        stub.GetUpstreamBalance(pb.GetUpstreamBalanceRequest(interface_id=iface.id), metadata=md(admin))
    page = console.page
    console.signed_in()
    console.go(f"/upstream/{iface.id}")
    page.wait_for_selector(".balance >> text=Not offered by this provider")
    assert page.locator(".balance .text-error").count() == 0
    page.click("button:has-text('Sync instances')")
    page.wait_for_selector("tr[data-instance=test]")
    console.shot("upstream-kvm")

    # Its admin page: the row buttons run admin_suspend / admin_resume through the bridge.
    console.go(f"/interfaces/{iface.id}/page")
    frame = page.frame_locator("iframe.plugin-frame")
    frame.locator("button[data-action=admin_suspend][data-name=test]").click()
    frame.locator("#action-out[data-state=ok]").wait_for()
    assert json.loads(frame.locator("#action-out").inner_text())["status"] == "paused"
    page.click("button:has-text('Reload page')")
    frame.locator("button[data-action=admin_resume][data-name=test]").click()
    frame.locator("#action-out[data-state=ok]").wait_for()
    assert json.loads(frame.locator("#action-out").inner_text())["status"] == "running"
    # Force off asks for the domain's name; a wrong one is the plugin's NOT_FOUND, shown in the page.
    frame.locator("input[name=domain]").fill("no-such-domain")
    frame.locator("#danger button[type=submit]").click()
    frame.locator("#danger-out[data-state=error]").wait_for()
    assert "Error (not_found)" in frame.locator("#danger-out").inner_text()
    console.shot("kvm-admin-page")


def _resell_myself(server: ServerProcess, stub: Any, admin: str) -> tuple[Any, Any, str]:
    """This server as its own upstream: a t_provider interface with three products, a customer with
    50 CNY and an API key, and a ``rustbill`` interface reselling the first as that customer (with
    low_balance 1000). Returns (first-party interface, rustbill interface, the customer's key)."""
    up = create_interface(stub, admin, "t_provider", json.dumps({"product_count": 3}), unique("drift-up"))
    stub.SyncProducts(product_pb2.SyncProductsRequest(interface_id=up.id), metadata=md(admin))
    name = unique("drift-reseller")
    server.cli("user", "create", name, "--role", "customer")
    server.cli("balance", "credit", name, "50")
    key = server.cli("apikey", "create", "--user", name, "--name", "reselling myself").stdout.strip()
    config = {"upstream_url": server.http_url, "api_key": key, "interface_id": up.id, "low_balance": "1000"}
    resell = create_interface(stub, admin, "rustbill", json.dumps(config), unique("drift-resell"))
    return up, resell, key


def test_upstream_page_drift_findings_import_and_acknowledge(
    browser: Any, console_server: ServerProcess, stub: Any, admin: str, shots: Path
) -> None:
    """The Upstream page of a ``rustbill`` interface lists what the drift watch found (DriftService
    over Connect): price changes, a product removed upstream, an orphan (imported from the list), a
    low balance (a condition: no acknowledge button); at laptop and phone widths, in Chinese too."""
    up, resell, key = _resell_myself(console_server, stub, admin)
    drift = drift_pb2_grpc.DriftServiceStub(console_server.channel())
    first = drift.CheckDrift(drift_pb2.CheckDriftRequest(interface_id=resell.id), metadata=md(admin)).findings
    assert [f.kind for f in first] == ["low_balance"]  # the first sync: products are as they are
    # The upstream changes: prices up by 1, Plan 2 gone; the reseller buys there directly.
    stub.UpdatePluginInterface(
        pb.UpdatePluginInterfaceRequest(
            interface_id=up.id, config_json=json.dumps({"product_count": 2, "price_bump": "1"})
        ),
        metadata=md(admin),
    )
    stub.SyncProducts(product_pb2.SyncProductsRequest(interface_id=up.id), metadata=md(admin))
    orphan = stub.CreateUpstreamInstance(
        pb.UpstreamOrderRequest(
            interface_id=up.id, server_spec=order_pb2.ServerSpec(cpu_cores=2, memory_gb=4, disk_gb=20)
        ),
        metadata=md(key),
    ).instance_id  # the upstream RustBill's id of the instance: what its reseller sees

    c = Console(browser, console_server, shots)
    try:
        page = c.page
        c.signed_in()
        c.go(f"/upstream/{resell.id}")
        card = page.locator("section[data-card=drift]")
        card.locator(".empty, .finding").first.wait_for()
        assert card.locator(".finding").count() == 1  # only what the last comparison found
        card.locator("button:has-text('Compare now')").click()
        card.locator(f".finding[data-key='orphan:{orphan}']").wait_for()
        kinds = sorted(card.locator(".finding").evaluate_all("els => els.map(e => e.dataset.kind)"))
        assert kinds == ["low_balance", "orphan", "price", "price", "removed"]
        assert "'Plan 2' is no longer offered upstream" in card.inner_text()
        assert re.search(r"2\s*Price changed", _text(page, "section[data-card=drift] .counts"))
        low = card.locator(".finding[data-kind=low_balance]")
        assert "below the 1000 set as low_balance" in low.inner_text()
        assert low.locator("button").count() == 0  # a condition: resolved upstream, not acknowledged
        c.shot("upstream-drift")

        # The orphan is imported from its finding: it leaves the list, and the instance is recorded.
        card.locator(f".finding[data-key='orphan:{orphan}'] button:has-text('Import')").click()
        page.wait_for_selector(f".toast:has-text('Imported {orphan}')")
        assert card.locator(f".finding[data-key='orphan:{orphan}']").count() == 0
        with raises_code(grpc.StatusCode.ALREADY_EXISTS):
            stub.ImportUpstreamInstance(
                pb.ImportUpstreamInstanceRequest(interface_id=resell.id, instance_id=orphan), metadata=md(admin)
            )
        # A price change is acknowledged (keyboard: focus and Enter); it is gone on the server too.
        price = card.locator(".finding[data-kind=price]").first.get_attribute("data-key")
        card.locator(f".finding[data-key='{price}'] button:has-text('Acknowledge')").focus()
        page.keyboard.press("Enter")
        card.locator(f".finding[data-key='{price}']").wait_for(state="detached")
        listed = drift.ListDriftFindings(drift_pb2.ListDriftFindingsRequest(interface_id=resell.id), metadata=md(admin))
        assert sorted(f.kind for f in listed.findings) == ["low_balance", "price", "removed"]
        assert price not in [f.key for f in listed.findings]
        c.go("/plugins")
        c.go(f"/upstream/{resell.id}")
        card.locator(".finding").first.wait_for()
        assert card.locator(".finding").count() == 3
        c.shot("upstream-drift-after")
    finally:
        c.close()

    for name, kwargs in (("phone-upstream-drift", {"viewport": PHONE}), ("zh-upstream-drift", {"locale": "zh-CN"})):
        c = Console(browser, console_server, shots, **kwargs)
        try:
            page = c.page
            c.signed_in()
            c.go(f"/upstream/{resell.id}")
            page.locator("section[data-card=drift] .finding").first.wait_for()
            if name.startswith("zh"):
                assert page.inner_text("section[data-card=drift] h2") == "漂移"
                assert "价格已变" in page.inner_text("section[data-card=drift] .counts")
            else:
                wide = page.evaluate("document.documentElement.scrollWidth")
                assert wide <= PHONE["width"], f"the drift card is {wide}px wide on a phone"
            c.shot(name)
        finally:
            c.close()


def test_drift_service_refusals(console_server: ServerProcess, stub: Any, admin: str) -> None:
    """DriftService is for admins; a condition cannot be acknowledged, an unknown finding is
    NOT_FOUND; only enabled upstream_provider interfaces are compared; bad ids are the caller's."""
    up, resell, key = _resell_myself(console_server, stub, admin)
    drift = drift_pb2_grpc.DriftServiceStub(console_server.channel())
    with raises_code(grpc.StatusCode.PERMISSION_DENIED, "requires the admin role"):
        drift.ListDriftFindings(drift_pb2.ListDriftFindingsRequest(interface_id=resell.id), metadata=md(key))
    with raises_code(grpc.StatusCode.UNAUTHENTICATED):
        drift.ListDriftFindings(drift_pb2.ListDriftFindingsRequest())
    drift.CheckDrift(drift_pb2.CheckDriftRequest(interface_id=resell.id), metadata=md(admin))
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "is a condition, not an event"):
        drift.AcknowledgeDriftFinding(
            drift_pb2.AcknowledgeDriftFindingRequest(interface_id=resell.id, key="low_balance"), metadata=md(admin)
        )
    with raises_code(grpc.StatusCode.NOT_FOUND, "no drift finding 'price:nope'"):
        drift.AcknowledgeDriftFinding(
            drift_pb2.AcknowledgeDriftFindingRequest(interface_id=resell.id, key="price:nope"), metadata=md(admin)
        )
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "key is required"):
        drift.AcknowledgeDriftFinding(
            drift_pb2.AcknowledgeDriftFindingRequest(interface_id=resell.id), metadata=md(admin)
        )
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "upstream_provider interfaces only"):
        drift.CheckDrift(drift_pb2.CheckDriftRequest(interface_id=up.id), metadata=md(admin))
    with raises_code(grpc.StatusCode.INVALID_ARGUMENT, "interface_id is not a valid UUID"):
        drift.CheckDrift(drift_pb2.CheckDriftRequest(interface_id="nope"), metadata=md(admin))
    with raises_code(grpc.StatusCode.NOT_FOUND):
        drift.CheckDrift(drift_pb2.CheckDriftRequest(interface_id=str(uuid.uuid4())), metadata=md(admin))
    stub.TogglePluginInterface(
        pb.TogglePluginInterfaceRequest(interface_id=resell.id, enable=False), metadata=md(admin)
    )
    with raises_code(grpc.StatusCode.FAILED_PRECONDITION, "is disabled"):
        drift.CheckDrift(drift_pb2.CheckDriftRequest(interface_id=resell.id), metadata=md(admin))
    # Over Connect JSON too (the console's edge): the same refusal, the same words.
    req = Request(
        f"{console_server.http_url}/rustbill.integration.DriftService/AcknowledgeDriftFinding",
        data=json.dumps({"interfaceId": resell.id, "key": "low_balance"}).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {admin}"},
    )
    try:
        urlopen(req, timeout=30)
        raise AssertionError("acknowledging a condition was accepted")
    except HTTPError as exc:
        body = json.loads(exc.read())
    assert body["code"] == "failed_precondition" and "is a condition" in body["message"]


# ---------------------------------------------------------------- server page


def test_server_page_and_restart(browser: Any, tmp_path: Path, databases: Databases, shots: Path) -> None:
    srv = ServerProcess(tmp_path, databases.new(), plugins=[SHIPPED_PLUGINS / "demo_cloud.py"])
    srv.add_plugin(TEST_PLUGINS / "t_provider.py")
    (srv.plugins_dir / "zz_broken.py").write_text("PLUGIN_TYPE = 'notifier'\ndef send(config, message:\n")
    srv.start()
    c = Console(browser, srv, shots)
    try:
        page = c.page
        c.signed_in()
        c.go("/server")
        from rustbill import __version__

        facts = page.inner_text(".dl")
        assert __version__ in facts and ("sqlite" in facts or "postgresql" in facts) and "reexec" in facts
        assert "zz_broken.py" in page.inner_text("main .card-error")
        uptime = page.inner_text(".dl dd:nth-of-type(3)")
        started = page.inner_text(".dl dd:nth-of-type(2)")
        page.wait_for_timeout(1100)
        assert page.inner_text(".dl dd:nth-of-type(3)") != uptime  # ticks
        c.shot("server")

        # The plugin page shows the file that does not load.
        c.go("/plugins")
        assert "zz_broken.py" in page.inner_text("main .card-error")
        c.shot("plugins-file-error")

        c.go("/server")
        mark = srv.log_mark()
        page.click("button:has-text('Restart server')")
        page.wait_for_selector("dialog[open]")
        assert "reexec" in page.inner_text("dialog[open]")
        page.keyboard.press("Escape")  # cancelled: nothing happens
        page.wait_for_timeout(500)
        assert srv.log_mark() == mark or "restarting" not in "".join(srv.log.splitlines(True)[mark:])
        page.click("button:has-text('Restart server')")
        c.dialog_button("Restart").click()
        page.wait_for_selector("text=Waiting for the server to come back")
        c.shot("server-restarting")
        page.wait_for_selector(".toast:has-text('The server is back')", timeout=90_000)
        srv.wait_for_log(r"restarting: draining in-flight calls", timeout=5, start=mark)
        c.ready("/server")
        assert page.inner_text(".dl dd:nth-of-type(2)") != started
        c.shot("server-after-restart")
    finally:
        c.close()
        srv.stop()


def test_plugin_load_problems_are_shown(browser: Any, tmp_path: Path, databases: Databases, shots: Path) -> None:
    srv = ServerProcess(tmp_path, databases.new(), plugins=[SHIPPED_PLUGINS / "demo_cloud.py"])
    good = (TEST_PLUGINS / "t_notifier.py").read_text()
    (srv.plugins_dir / "zz_flaky.py").write_text(good)
    (srv.plugins_dir / "zz_gone.py").write_text(good)
    srv.start()
    token = srv.token()
    stub = srv.stub()
    create_interface(stub, token, "zz_gone", "{}", "kept")
    (srv.plugins_dir / "zz_flaky.py").write_text(good + "\nraise RuntimeError('broken on purpose')\n")
    (srv.plugins_dir / "zz_gone.py").unlink()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        plugins = {p.plugin_id: p for p in stub.ListPlugins(pb.ListPluginsRequest(), metadata=md(token)).plugins}
        if plugins["zz_flaky"].load_error and not plugins["zz_gone"].file_present:
            break
        time.sleep(0.2)
    c = Console(browser, srv, shots)
    try:
        c.signed_in()
        flaky = c.page.locator("article[data-plugin=zz_flaky]")
        assert "Load error" in flaky.inner_text() and "broken on purpose" in flaky.inner_text()
        assert "last good version stays in use" in flaky.inner_text()
        gone = c.page.locator("article[data-plugin=zz_gone]")
        assert "File missing" in gone.inner_text() and "kept" in gone.inner_text()
        assert gone.locator("a:has-text('New interface')").get_attribute("aria-disabled") == "true"
        c.shot("plugins-load-problems")
    finally:
        c.close()
        srv.stop()


# ---------------------------------------------------------------- languages and phones


def test_chinese_and_english(browser: Any, console_server: ServerProcess, stub: Any, admin: str, shots: Path) -> None:
    iface = create_interface(
        stub, admin, "yipay", json.dumps({"api_url": "https://pay.example.com", "key": "k"}), "易支付-测试"
    )
    c = Console(browser, console_server, shots, locale="zh-CN")
    try:
        page = c.page
        c.open()
        assert page.inner_text("h1") == "管理控制台" and page.inner_text("button[type=submit]") == "登录"
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        c.shot("zh-sign-in")
        c.signed_in()
        assert page.inner_text("nav.nav").split() == ["插件", "上游", "服务器"]
        assert "支付网关" in page.inner_text("main")
        c.shot("zh-plugins")
        c.go(f"/interfaces/{iface.id}")
        assert "检查健康状态" in page.inner_text("main") and "支付通知地址" in page.inner_text("main")
        assert "已配置" in page.inner_text(".field[data-path=key]")
        c.shot("zh-interface")
        c.go("/upstream")
        c.shot("zh-upstream")
        c.go("/server")
        assert "重启服务器" in page.inner_text("main")
        c.shot("zh-server")
        # Switch to English: remembered (the language only).
        page.select_option("select.lang-select", "en")
        page.wait_for_selector("nav.nav >> text=Plugins")
        c.ready("/server")
        assert page.evaluate("({...localStorage})") == {"rustbill.console.lang": "en"}
        page.reload()
        page.wait_for_selector("nav.nav >> text=Plugins")
        assert page.evaluate("document.documentElement.lang") == "en"
    finally:
        c.close()


def test_phone_width(browser: Any, console_server: ServerProcess, stub: Any, admin: str, shots: Path) -> None:
    cloud = create_interface(stub, admin, "demo_cloud", "{}", unique("phone-cloud"))
    webhook = create_interface(
        stub,
        admin,
        "webhook",
        json.dumps({"url": "https://hooks.example.com/x", "secret": new_secret()}),
        unique("phone-hook"),
    )
    kvm = create_interface(stub, admin, "kvm", json.dumps({"uri": "test:///default"}), unique("phone-kvm"))
    c = Console(browser, console_server, shots, viewport=PHONE)
    try:
        page = c.page
        c.open()
        c.shot("phone-sign-in")
        c.signed_in()
        for route, name in (
            ("/plugins", "phone-plugins"),
            (f"/interfaces/{webhook.id}", "phone-interface"),
            (f"/upstream/{cloud.id}", "phone-upstream"),
            ("/server", "phone-server"),
            (f"/interfaces/{webhook.id}/page", "phone-admin-page"),
            (f"/interfaces/{kvm.id}/page", "phone-kvm-page"),
        ):
            c.go(route)
            if route.startswith("/upstream"):
                page.click("button:has-text('Sync products')")
                page.wait_for_selector(".counts")
            wide = page.evaluate("document.documentElement.scrollWidth")
            culprits = page.evaluate(
                "w => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1)"
                ".slice(0, 5).map(e => `${e.tagName}.${e.className}: ${(e.textContent || '').slice(0, 60)}`)",
                PHONE["width"],
            )
            assert wide <= PHONE["width"], f"{route} is {wide}px wide on a {PHONE['width']}px screen: {culprits}"
            if route.endswith("/page"):  # the plugin's own page fits its frame (a wide table scrolls by itself)
                frame = page.wait_for_selector("iframe.plugin-frame").content_frame()
                assert frame is not None
                frame.wait_for_selector("h1")
                inner, room = frame.evaluate(
                    "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
                )
                assert inner <= room, f"{name}: the plugin's page is {inner}px wide in its {room}px frame"
            c.shot(name)
        # The provider picker is a select on a phone.
        c.go(f"/upstream/{cloud.id}")
        assert page.is_visible("select.provider-select") and not page.is_visible("nav.provider-list")
    finally:
        c.close()
