// A plugin's admin page, embedded safely, and the bridge that runs its actions.
//
// The page is written into plugin-frame.html, loaded in <iframe sandbox="allow-scripts allow-forms">
// and served with its own Content-Security-Policy (see rustbill/console/__init__.py): an opaque
// origin without cookies, storage or network access, which cannot touch this document. The only
// way out is postMessage to this window, and the bridge answers exactly one request:
//
//   page → console  {type: "rustbill:action", id, function: "admin_…", args: {…}}
//   console → page  {type: "rustbill:result", id, ok: true, result}
//                   {type: "rustbill:result", id, ok: false, error: {code, message}}
//
// for the interface whose page is shown, and nothing else: the interface id is the console's,
// never the page's (a message with any other key is refused); only admin_* functions are
// forwarded (as CallPluginAction); at most MAX_IN_FLIGHT calls at once. Messages from any other
// window are ignored. Plugin pages get the page side from rustbill.sdk.admin_bridge_script().

import { integration, ApiError } from "./api.js";
import { t } from "./i18n.js";

const FUNCTION_RE = /^admin_[A-Za-z0-9_]{1,100}$/;
const ALLOWED_KEYS = new Set(["type", "id", "function", "args"]);
const MAX_ARGS_BYTES = 256 * 1024;
const MAX_IN_FLIGHT = 4;

export const FRAME_URL = "plugin-frame.html";

/**
 * Mounts the admin page `html` of interface `interfaceId` into `container`.
 * onCall({function, ok, code, message, ms}) reports every request the page made.
 * Returns {frame, destroy()}.
 */
export function mountPluginPage(container, { interfaceId, html, title, onCall, onNavigated }) {
  const frame = document.createElement("iframe");
  // The sandbox is set before the frame has a URL, so the page never runs unsandboxed.
  frame.setAttribute("sandbox", "allow-scripts allow-forms");
  frame.setAttribute("referrerpolicy", "no-referrer");
  frame.setAttribute("title", title || t("Plugin admin page"));
  frame.className = "plugin-frame";
  frame.src = FRAME_URL;

  let loads = 0;
  let closed = false;
  let inFlight = 0;

  frame.addEventListener("load", () => {
    loads += 1;
    if (loads === 1) {
      // Our own plugin-frame.html has loaded: hand it the page. (The page is plugin content, not a
      // secret of the console; the frame has an opaque origin, so "*" is the only possible target.)
      frame.contentWindow.postMessage({ type: "rustbill:page", html }, "*");
    } else if (loads > 2) {
      // 2 is the written page finishing; more means the page navigated away from itself.
      closed = true;
      if (onNavigated) onNavigated();
    }
  });

  function reply(target, id, ok, payload) {
    const msg = ok ? { type: "rustbill:result", id, ok: true, result: payload }
      : { type: "rustbill:result", id, ok: false, error: payload };
    try {
      target.postMessage(msg, "*");
    } catch {
      // the frame is gone
    }
  }

  async function onMessage(ev) {
    if (closed || ev.source !== frame.contentWindow || ev.source === null) return;
    if (ev.origin !== "null") return; // the sandboxed frame always has an opaque origin
    const m = ev.data;
    if (!m || typeof m !== "object" || m.type !== "rustbill:action") return;
    const target = ev.source;
    const id = typeof m.id === "string" ? m.id.slice(0, 200) : (Number.isFinite(m.id) ? m.id : null);
    const refuse = (code, message) => {
      if (onCall) onCall({ function: String(m.function ?? "").slice(0, 120), ok: false, code, message, ms: 0 });
      reply(target, id, false, { code, message });
    };
    if (id === null) return refuse("invalid_argument", "id must be a string or a number");
    const extra = Object.keys(m).filter((k) => !ALLOWED_KEYS.has(k));
    if (extra.length) {
      return refuse("invalid_argument",
        `unknown field(s) ${extra.join(", ")}: a page can call actions only of its own interface`);
    }
    if (typeof m.function !== "string" || !FUNCTION_RE.test(m.function) || m.function === "admin_page") {
      return refuse("permission_denied", "only admin_* functions of this interface can be called from its page");
    }
    const args = m.args === undefined || m.args === null ? {} : m.args;
    if (typeof args !== "object" || Array.isArray(args)) return refuse("invalid_argument", "args must be an object");
    let argsJson;
    try {
      argsJson = JSON.stringify(args);
    } catch {
      return refuse("invalid_argument", "args cannot be sent as JSON");
    }
    if (argsJson.length > MAX_ARGS_BYTES) return refuse("invalid_argument", "args are larger than 256 KiB");
    if (inFlight >= MAX_IN_FLIGHT) return refuse("resource_exhausted", `at most ${MAX_IN_FLIGHT} actions at a time`);

    inFlight += 1;
    const started = performance.now();
    try {
      const r = await integration("CallPluginAction", { interfaceId, function: m.function, argsJson });
      let result;
      try {
        result = r.resultJson ? JSON.parse(r.resultJson) : null;
      } catch {
        result = r.resultJson;
      }
      if (onCall) onCall({ function: m.function, ok: true, ms: Math.round(performance.now() - started) });
      if (!closed) reply(target, id, true, result);
    } catch (err) {
      const code = err instanceof ApiError ? err.code : "unknown";
      const message = err && err.message ? err.message : String(err);
      if (onCall) onCall({ function: m.function, ok: false, code, message, ms: Math.round(performance.now() - started) });
      if (!closed) reply(target, id, false, { code, message });
    } finally {
      inFlight -= 1;
    }
    return undefined;
  }

  window.addEventListener("message", onMessage);
  container.append(frame);
  return {
    frame,
    destroy() {
      closed = true;
      window.removeEventListener("message", onMessage);
      frame.remove();
    },
  };
}
