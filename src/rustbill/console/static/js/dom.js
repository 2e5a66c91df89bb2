// Small DOM helpers. Every piece of text from the server or a plugin goes in as a text node or an
// attribute value, never as HTML.

import { t, lang, N_ } from "./i18n.js";

/** h("button", {class: "btn", onclick: fn, disabled: true}, "text", child, [more]) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let uid = 0;
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

// ---------------------------------------------------------------- states

export function spinner(label) {
  return h("span", { class: "spinner", role: "status", "aria-live": "polite" },
    h("span", { class: "spinner-dot", "aria-hidden": "true" }), label || t("Loading…"));
}

export function loading(label) {
  return h("div", { class: "state state-loading" }, spinner(label));
}

/** An error panel with the server's code and message, and a retry button when given one. */
export function errorState(err, retry) {
  return h("div", { class: "state state-error", role: "alert" },
    h("p", { class: "state-title" }, errorTitle(err)),
    h("p", { class: "state-detail" }, err && err.message ? err.message : String(err)),
    retry ? h("button", { class: "btn", type: "button", onclick: retry }, t("Retry")) : null);
}

export function errorTitle(err) {
  const code = (err && err.code) || "unknown";
  return t(CODE_TITLES[code] || "Error") + (code !== "unknown" ? ` (${code})` : "");
}

const CODE_TITLES = {
  invalid_argument: N_("Invalid input"),
  not_found: N_("Not found"),
  already_exists: N_("Already exists"),
  permission_denied: N_("Not allowed"),
  unauthenticated: N_("Not signed in"),
  failed_precondition: N_("Cannot do this now"),
  unavailable: N_("Unavailable"),
  deadline_exceeded: N_("Timed out"),
  resource_exhausted: N_("Too many requests"),
  unimplemented: N_("Not offered"),
  internal: N_("Server error"),
  aborted: N_("Aborted"),
  canceled: N_("Cancelled"),
};

/** An inline message under a form or a button row. kind: "error" | "ok" | "info" */
export function notice(kind, ...children) {
  return h("div", { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" }, children);
}

export function errorNotice(err) {
  return notice("error", h("strong", {}, errorTitle(err) + ": "), err && err.message ? err.message : String(err));
}

// ---------------------------------------------------------------- toasts

export function toast(message, kind = "ok") {
  let region = document.getElementById("toasts");
  if (!region) {
    region = h("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
    document.body.append(region);
  }
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  region.append(el);
  while (region.children.length > 3) region.firstChild.remove();
  setTimeout(() => el.classList.add("toast-out"), kind === "error" ? 8000 : 4000);
  setTimeout(() => el.remove(), kind === "error" ? 8600 : 4600);
}

// ---------------------------------------------------------------- buttons

/** Runs fn() with the button disabled and busy; returns fn's promise. */
export async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.classList.add("is-busy");
  try {
    return await fn();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.classList.remove("is-busy");
  }
}

// ---------------------------------------------------------------- dialogs

/**
 * A modal confirmation. Resolves true when confirmed; Escape, Cancel or a click outside resolve
 * false. Destructive dialogs start with the focus on Cancel. alert: one button only.
 */
export function confirmDialog({ title, message, confirmLabel, cancelLabel, danger = false, details, alert = false }) {
  return new Promise((resolve) => {
    const cancel = alert ? null : h("button", { class: "btn", type: "button", value: "cancel" }, cancelLabel || t("Cancel"));
    const ok = h("button", { class: danger ? "btn btn-danger" : "btn btn-primary", type: "button", value: "ok" },
      confirmLabel || t("Confirm"));
    const titleId = nextId("dlg");
    const dlg = h("dialog", { class: "dialog", "aria-labelledby": titleId },
      h("h2", { id: titleId, class: "dialog-title" }, title),
      typeof message === "string" ? h("p", {}, message) : message,
      details ? h("div", { class: "dialog-details" }, details) : null,
      h("div", { class: "dialog-actions" }, cancel, ok));
    let result = false;
    if (cancel) cancel.addEventListener("click", () => dlg.close());
    ok.addEventListener("click", () => { result = true; dlg.close(); });
    dlg.addEventListener("click", (ev) => { if (ev.target === dlg) dlg.close(); });
    dlg.addEventListener("close", () => { dlg.remove(); resolve(result); });
    document.body.append(dlg);
    dlg.showModal();
    (danger && cancel ? cancel : ok).focus();
  });
}

// ---------------------------------------------------------------- formatting

export function fmtTime(rfc3339) {
  if (!rfc3339) return "—";
  const d = new Date(rfc3339);
  if (Number.isNaN(d.getTime())) return rfc3339;
  return d.toLocaleString(lang() === "zh" ? "zh-CN" : "en-GB", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function fmtAgo(rfc3339) {
  if (!rfc3339) return "";
  const s = Math.round((Date.now() - new Date(rfc3339).getTime()) / 1000);
  if (!Number.isFinite(s)) return "";
  if (s < 60) return t("just now");
  if (s < 3600) return t("{n} min ago", { n: Math.floor(s / 60) });
  if (s < 86400) return t("{n} h ago", { n: Math.floor(s / 3600) });
  return t("{n} d ago", { n: Math.floor(s / 86400) });
}

export function fmtDuration(seconds) {
  seconds = Math.max(0, Math.floor(Number(seconds) || 0));
  const d = Math.floor(seconds / 86400);
  const hh = Math.floor((seconds % 86400) / 3600);
  const mm = Math.floor((seconds % 3600) / 60);
  const ss = seconds % 60;
  const parts = [];
  if (d) parts.push(t("{n} d", { n: d }));
  if (d || hh) parts.push(t("{n} h", { n: hh }));
  if (d || hh || mm) parts.push(t("{n} min", { n: mm }));
  parts.push(t("{n} s", { n: ss }));
  return parts.join(" ");
}

/** A badge: kind is "ok", "warn", "error", "muted" or "info". */
export function badge(kind, text, title) {
  return h("span", { class: `badge badge-${kind}`, title }, text);
}

export function healthBadge(iface) {
  if (!iface.lastCheckAt) return badge("muted", t("Not checked"));
  return iface.isHealthy ? badge("ok", t("Healthy")) : badge("error", t("Unhealthy"), iface.healthError || "");
}

export function copyButton(text, label) {
  const b = h("button", { class: "btn btn-small btn-ghost", type: "button", title: t("Copy") }, label || t("Copy"));
  b.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      toast(t("Copied"));
    } catch {
      toast(t("Copying is not allowed here; select the text instead"), "error");
    }
  });
  return b;
}
