// The console's shell: sign-in, the top bar, the router and the language switch.

import * as api from "./api.js";
import { h, clear, errorState, notice, loading, confirmDialog, nextId } from "./dom.js";
import { t, lang, setLang, applyLang } from "./i18n.js";
import * as plugins from "./pages/plugins.js";
import * as iface from "./pages/interface.js";
import * as upstream from "./pages/upstream.js";
import * as server from "./pages/server.js";

const app = document.getElementById("app");

const ROUTES = [
  [/^\/plugins$/, plugins.render, "plugins"],
  [/^\/plugins\/([0-9a-fA-F-]{36})\/new$/, iface.renderCreate, "plugins"],
  [/^\/interfaces\/([0-9a-fA-F-]{36})$/, iface.renderDetail, "plugins"],
  [/^\/interfaces\/([0-9a-fA-F-]{36})\/page$/, iface.renderAdminPage, "plugins"],
  [/^\/upstream$/, upstream.render, "upstream"],
  [/^\/upstream\/([0-9a-fA-F-]{36})$/, upstream.render, "upstream"],
  [/^\/server$/, server.render, "server"],
];

let current = null; // {cleanup, isDirty} of the page shown
let shownHash = null;
let ignoreNextHash = false;
let navSeq = 0;
let main = null;

function route() {
  const path = (location.hash || "").replace(/^#/, "") || "/plugins";
  for (const [re, fn, section] of ROUTES) {
    const m = re.exec(path);
    if (m) return { fn, section, params: m.slice(1), path };
  }
  return null;
}

export function navigate(path) {
  location.hash = `#${path}`;
}

// ---------------------------------------------------------------- sign-in

function signInView(message) {
  const userId = nextId("u");
  const pwId = nextId("p");
  const username = h("input", { id: userId, name: "username", autocomplete: "username", required: true,
    autocapitalize: "none", spellcheck: "false" });
  const password = h("input", { id: pwId, name: "password", type: "password", autocomplete: "current-password",
    required: true });
  const status = h("div", { class: "signin-status" }, message ? notice("info", message) : null);
  const submit = h("button", { class: "btn btn-primary btn-block", type: "submit" }, t("Sign in"));
  const form = h("form", { class: "signin-form", novalidate: true },
    h("div", { class: "field" }, h("label", { for: userId, class: "field-label" }, t("Username")), username),
    h("div", { class: "field" }, h("label", { for: pwId, class: "field-label" }, t("Password")), password),
    status, submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!username.value.trim() || !password.value) {
      clear(status, notice("error", t("Enter your username and password.")));
      (username.value.trim() ? password : username).focus();
      return;
    }
    submit.disabled = true;
    clear(status, loading(t("Signing in…")));
    try {
      await api.login(username.value.trim(), password.value);
      password.value = "";
      startShell();
    } catch (err) {
      submit.disabled = false;
      clear(status, notice("error", signInError(err)));
      password.select();
      password.focus();
    }
  });
  clear(app, h("div", { class: "signin" },
    h("div", { class: "signin-lang" }, langSwitch()),
    h("div", { class: "signin-card" },
      h("div", { class: "brand brand-large" }, logo(), h("span", {}, "RustBill")),
      h("h1", { class: "signin-title" }, t("Admin console")),
      h("p", { class: "muted" }, t("Sign in with an administrator account.")),
      form)));
  username.focus();
}

function signInError(err) {
  switch (err.code) {
    case "unauthenticated":
      return t("Wrong username or password.");
    case "permission_denied":
      return t("This account is not an administrator. The console is for admins only.");
    case "resource_exhausted":
      return err.retryAfter ? t("Too many failed sign-ins. Try again in {n} s.", { n: err.retryAfter })
        : t("Too many failed sign-ins. Try again later.");
    case "unavailable":
      return t("The server cannot be reached. Check that it is running and try again.");
    default:
      return `${t("Sign-in failed")}: ${err.message}`;
  }
}

function logo() {
  return h("span", { class: "logo", "aria-hidden": "true" }, "R");
}

function langSwitch() {
  const id = nextId("lang");
  const sel = h("select", { id, class: "lang-select", "aria-label": t("Language") },
    h("option", { value: "zh" }, "中文"), h("option", { value: "en" }, "English"));
  sel.value = lang();
  sel.addEventListener("change", async () => {
    if (current && current.isDirty && current.isDirty()) {
      const ok = await confirmDialog({ title: t("Discard changes?"),
        message: t("Switching the language reloads this page; unsaved changes are lost."),
        confirmLabel: t("Discard"), danger: true });
      if (!ok) { sel.value = lang(); return; }
    }
    setLang(sel.value);
    if (api.signedIn()) startShell();
    else signInView();
  });
  return sel;
}

// ---------------------------------------------------------------- the shell

function startShell() {
  const me = api.user();
  const navLink = (section, href, label) => h("a", { href, class: "nav-link", "data-section": section }, label);
  const signOut = h("button", { class: "btn btn-ghost btn-small", type: "button" }, t("Sign out"));
  signOut.addEventListener("click", async () => {
    if (current && current.isDirty && current.isDirty()) {
      const ok = await confirmDialog({ title: t("Discard changes?"), message: t("You have unsaved changes."),
        confirmLabel: t("Discard"), danger: true });
      if (!ok) return;
    }
    signOut.disabled = true;
    try {
      await api.logout();
      teardown();
      signInView(t("You are signed out."));
    } catch (err) {
      teardown();
      signInView(`${t("Signed out here, but the server could not be told")}: ${err.message}`);
    }
  });
  main = h("main", { id: "main", class: "main", tabindex: "-1" });
  clear(app,
    h("a", { class: "skip", href: "#main" }, t("Skip to content")),
    h("header", { class: "topbar" },
      h("a", { class: "brand", href: "#/plugins" }, logo(), h("span", {}, "RustBill"),
        h("span", { class: "brand-sub" }, t("Console"))),
      h("nav", { class: "nav", "aria-label": t("Main") },
        navLink("plugins", "#/plugins", t("Plugins")),
        navLink("upstream", "#/upstream", t("Upstream")),
        navLink("server", "#/server", t("Server"))),
      h("div", { class: "top-actions" }, langSwitch(),
        h("span", { class: "whoami", title: t("Signed in as {name}", { name: me ? me.username : "" }) },
          me ? me.username : ""),
        signOut)),
    main);
  shownHash = null;
  show();
}

function teardown() {
  if (current && current.cleanup) current.cleanup();
  current = null;
  main = null;
}

async function show() {
  if (!main) return;
  const r = route();
  if (!r) {
    navigate("/plugins");
    return;
  }
  if (current && current.cleanup) current.cleanup();
  current = null;
  shownHash = location.hash;
  for (const a of document.querySelectorAll(".nav-link")) {
    if (a.dataset.section === r.section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const target = main;
  const hash = location.hash;
  // Each navigation renders into a view of its own, shown once it is still the current one: a
  // slow page never overwrites the page the user went on to. data-route / data-state on <main>
  // say when a page has finished loading (tests and scripts wait on them).
  const view = h("div", { class: "view" });
  target.dataset.route = "";
  target.dataset.state = "loading";
  clear(target, loading());
  navSeq += 1;
  const seq = navSeq;
  const stillCurrent = () => target === main && seq === navSeq && hash === location.hash;
  let state = "ready";
  let page = null;
  try {
    page = await r.fn(view, r.params, { navigate, reload: () => show() });
    if (stillCurrent()) current = page || null;
    else if (page && page.cleanup) page.cleanup();
  } catch (err) {
    state = "error";
    clear(view, errorState(err, () => show()));
  }
  if (!stillCurrent()) return;
  clear(target, view);
  target.dataset.route = r.path;
  target.dataset.state = state;
  if (page && page.onShown) {
    page.onShown();
    return;
  }
  // Move the focus to the new page (keyboard and screen-reader users start there).
  const heading = view.querySelector("h1");
  if (heading) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

window.addEventListener("hashchange", async () => {
  if (ignoreNextHash) {
    ignoreNextHash = false;
    return;
  }
  if (!main) return;
  if (current && current.isDirty && current.isDirty()) {
    const ok = await confirmDialog({ title: t("Discard changes?"),
      message: t("You have unsaved changes on this page."), confirmLabel: t("Discard"), danger: true });
    if (!ok) {
      ignoreNextHash = true;
      location.hash = shownHash || "#/plugins";
      return;
    }
  }
  window.scrollTo(0, 0);
  show();
});

window.addEventListener("beforeunload", (ev) => {
  if (current && current.isDirty && current.isDirty()) {
    ev.preventDefault();
    ev.returnValue = "";
  }
});

api.onSignedOut((reason) => {
  teardown();
  signInView(`${t("Your session has ended")}: ${reason}. ${t("Sign in again.")}`);
});

// ---------------------------------------------------------------- start

async function boot() {
  applyLang();
  try {
    const me = await api.resume();
    if (me) startShell();
    else signInView();
  } catch (err) {
    if (err.code === "permission_denied") signInView(err.message);
    else clear(app, h("div", { class: "signin" }, h("div", { class: "signin-card" }, errorState(err, boot))));
  }
}

boot();
