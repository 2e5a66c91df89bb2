// The public API over Connect JSON, and the signed-in session.
//
// The access token lives in this module's memory only: never in localStorage, sessionStorage, a
// cookie readable by scripts, or a global. The refresh token travels only in the HttpOnly
// `rustbill_refresh` cookie that Login sets for /rustbill.identity.IdentityService/; on load and
// shortly before the access token expires the console asks RefreshToken for a new pair. Refreshes
// are serialised across tabs (Web Locks), because each refresh token works once and presenting a
// used one again ends the login everywhere.

import { t } from "./i18n.js";

export const INTEGRATION = "rustbill.integration.IntegrationService";
export const IDENTITY = "rustbill.identity.IdentityService";
export const SYSTEM = "rustbill.system.SystemService";
export const DRIFT = "rustbill.integration.DriftService";

const DEFAULT_TIMEOUT_MS = 90_000;
const REFRESH_MARGIN_S = 60;

export class ApiError extends Error {
  constructor(code, message, status = 0, retryAfter = null) {
    super(message);
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

// ---------------------------------------------------------------- session state

let accessToken = null;
let expiresAt = 0; // ms since the epoch
let refreshTimer = null;
let refreshing = null; // the refresh in progress in this tab
let currentUser = null;
const signedOutListeners = new Set();

export function user() {
  return currentUser;
}

export function signedIn() {
  return accessToken !== null;
}

/** fn(reason) runs when the session ends without the user asking (expired, revoked). */
export function onSignedOut(fn) {
  signedOutListeners.add(fn);
}

function setSession(token, expiresIn) {
  accessToken = token;
  const seconds = Number(expiresIn) || 900;
  expiresAt = Date.now() + seconds * 1000;
  clearTimeout(refreshTimer);
  const wait = Math.max(5, seconds - REFRESH_MARGIN_S) * 1000;
  refreshTimer = setTimeout(scheduledRefresh, wait);
}

function scheduledRefresh() {
  refresh().catch((err) => {
    // Server down for a moment (a restart): try again while the token may still be valid. A
    // refused refresh has already ended the session (lostSession).
    if (accessToken && !(err instanceof ApiError && err.code === "unauthenticated")) {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(scheduledRefresh, 15_000);
    }
  });
}

function dropSession() {
  accessToken = null;
  currentUser = null;
  expiresAt = 0;
  clearTimeout(refreshTimer);
  refreshTimer = null;
}

function lostSession(reason) {
  const was = accessToken !== null;
  dropSession();
  if (was) for (const fn of signedOutListeners) fn(reason);
}

// Timers do not run while a laptop sleeps or are throttled in background tabs: check on return.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible" && accessToken && Date.now() > expiresAt - REFRESH_MARGIN_S * 1000) {
    refresh().catch(() => {});
  }
});

// ---------------------------------------------------------------- calls

async function post(service, method, body, { token = null, timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  let resp;
  try {
    resp = await fetch(`/${service}/${method}`, {
      method: "POST",
      headers,
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
      cache: "no-store",
      signal: ctrl.signal,
    });
  } catch (exc) {
    if (ctrl.signal.aborted) {
      throw new ApiError("deadline_exceeded", t("No answer from the server within {n} s", { n: timeoutMs / 1000 }));
    }
    throw new ApiError("unavailable", t("The server cannot be reached ({detail})", { detail: exc.message || exc }));
  } finally {
    clearTimeout(timer);
  }
  const text = await resp.text();
  if (resp.ok) {
    try {
      return text ? JSON.parse(text) : {};
    } catch {
      throw new ApiError("internal", t("The server sent a reply that is not JSON"), resp.status);
    }
  }
  let code = `http_${resp.status}`;
  let message = text.slice(0, 500) || resp.statusText;
  try {
    const j = JSON.parse(text);
    if (j && typeof j.code === "string") code = j.code;
    if (j && typeof j.message === "string") message = j.message;
  } catch {
    // not JSON: a proxy's error page; keep its text
  }
  if (resp.status === 502 || resp.status === 503 || resp.status === 504) {
    if (code.startsWith("http_")) code = "unavailable";
  }
  throw new ApiError(code, message, resp.status, resp.headers.get("retry-after"));
}

/** Calls service/method with the session's token; refreshes once and retries on UNAUTHENTICATED. */
export async function call(service, method, body = {}, options = {}) {
  if (!accessToken) await refresh();
  try {
    return await post(service, method, body, { ...options, token: accessToken });
  } catch (err) {
    if (!(err instanceof ApiError) || err.code !== "unauthenticated") throw err;
    try {
      await refresh();
    } catch {
      throw err;
    }
    return post(service, method, body, { ...options, token: accessToken });
  }
}

export const integration = (method, body, options) => call(INTEGRATION, method, body, options);
export const system = (method, body, options) => call(SYSTEM, method, body, options);
export const drift = (method, body, options) => call(DRIFT, method, body, options);

// ---------------------------------------------------------------- sign-in, refresh, sign-out

/** Signs in as an admin; throws ApiError (permission_denied for a customer account). */
export async function login(username, password) {
  const r = await post(IDENTITY, "Login", { username, password, userType: "admin" });
  // r.refreshToken is not kept: the HttpOnly cookie carries it.
  if (!r.user || r.user.role !== "admin") {
    throw new ApiError("permission_denied", t("This account is not an administrator."));
  }
  setSession(r.accessToken, r.expiresIn);
  currentUser = r.user;
  return r.user;
}

async function refreshOnce() {
  let r;
  try {
    r = await post(IDENTITY, "RefreshToken", {});
  } catch (err) {
    if (err instanceof ApiError && (err.code === "unauthenticated" || err.code === "invalid_argument")) {
      lostSession(err.message);
    }
    throw err;
  }
  setSession(r.accessToken, r.expiresIn);
  return r;
}

/** A new access token through the refresh cookie (one at a time in this tab and across tabs). */
export function refresh() {
  if (!refreshing) {
    const run = () => refreshOnce();
    const p = navigator.locks ? navigator.locks.request("rustbill-console-refresh", run) : run();
    refreshing = p.finally(() => { refreshing = null; });
  }
  return refreshing;
}

/** On page load: resume the session of the refresh cookie, if there is one and it is an admin's. */
export async function resume() {
  try {
    await refresh();
  } catch (err) {
    if (err.code === "unauthenticated") return null; // no cookie, or a used/expired one: sign in
    throw err;
  }
  const me = await post(IDENTITY, "GetMe", {}, { token: accessToken });
  if (!me.user || me.user.role !== "admin") {
    dropSession();
    throw new ApiError("permission_denied", t("The signed-in account is not an administrator."));
  }
  currentUser = me.user;
  return currentUser;
}

/** Ends the login on the server (Logout revokes it and clears the cookie), then forgets the token. */
export async function logout() {
  try {
    await post(IDENTITY, "Logout", {});
  } finally {
    dropSession();
  }
}

/**
 * After RestartServer: waits until the server answers again as a new process (GetServerInfo with
 * another startedAt). Resolves the new ServerInfo, or null when timeoutMs passes first.
 */
export async function waitForRestart(oldStartedAt, timeoutMs, onTick) {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    if (onTick) onTick(Math.round((Date.now() - start) / 1000));
    try {
      const info = await post(SYSTEM, "GetServerInfo", {}, { token: accessToken, timeoutMs: 3000 });
      if (info.startedAt !== oldStartedAt) return info;
    } catch (err) {
      // down, or still draining: keep waiting (with a fresh token if this one ran out meanwhile)
      if (err instanceof ApiError && err.code === "unauthenticated") await refresh().catch(() => {});
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  return null;
}
