// The server page: what is running (version, uptime, database, plugins), and RestartServer.

import { integration, system, waitForRestart } from "../api.js";
import { h, clear, fmtTime, fmtDuration, confirmDialog, toast, errorNotice, notice, spinner, badge } from "../dom.js";
import { t } from "../i18n.js";

const RESTART_WAIT_MS = 120_000;

export async function render(main, params, ctx) {
  const info = await system("GetServerInfo", {});
  const loadedAt = Date.now();
  const uptime = h("span", {}, fmtDuration(info.uptimeSeconds));
  const timer = setInterval(() => {
    uptime.textContent = fmtDuration(Number(info.uptimeSeconds) + (Date.now() - loadedAt) / 1000);
  }, 1000);

  const restartBox = h("div", { "aria-live": "polite" });
  const restart = h("button", { type: "button", class: "btn btn-danger" }, t("Restart server"));
  restart.addEventListener("click", async () => {
    const exitMode = info.restartMode === "exit";
    const ok = await confirmDialog({
      title: t("Restart the server?"),
      message: h("div", {},
        h("p", {}, t("Calls in progress are allowed to finish, then the server stops taking calls for a moment. Payments and orders arriving meanwhile are refused and retried by their senders.")),
        h("p", {}, exitMode
          ? t("Restart mode is \"exit\": the process exits and your process manager (systemd) must start it again.")
          : t("Restart mode is \"reexec\": the process starts itself again on the same ports."))),
      confirmLabel: t("Restart"), danger: true,
    });
    if (!ok) return;
    restart.disabled = true;
    const progress = h("span", {}, t("Waiting for the server to come back…"));
    try {
      await integration("RestartServer", {});
    } catch (err) {
      restart.disabled = false;
      clear(restartBox, errorNotice(err));
      return;
    }
    clear(restartBox, notice("info", spinner(t("Restarting…")), " ", progress));
    const back = await waitForRestart(info.startedAt, RESTART_WAIT_MS, (s) => {
      progress.textContent = t("Waiting for the server to come back… {n} s", { n: s });
    });
    if (back) {
      toast(t("The server is back (version {v})", { v: back.version }));
      if (main.isConnected && location.hash === "#/server") ctx.reload();
    } else {
      restart.disabled = false;
      clear(restartBox, notice("error", t("The server has not come back within {n} s. Check the server's log and its process manager; this page keeps the last known state.", { n: RESTART_WAIT_MS / 1000 })));
    }
  });

  const errors = info.pluginErrors || [];
  const row = (label, value) => [h("dt", {}, label), h("dd", {}, value)];
  clear(main,
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, t("Server")),
      h("p", { class: "muted" }, t("The RustBill IntegrationService process this console talks to.")))),
    h("div", { class: "grid-2" },
      h("section", { class: "card" }, h("h2", {}, t("Process")),
        h("dl", { class: "dl" },
          row(t("Version"), h("strong", {}, info.version)),
          row(t("Started"), fmtTime(info.startedAt)),
          row(t("Uptime"), uptime),
          row(t("Python"), info.pythonVersion),
          row(t("Database"), info.database),
          row(t("Public URL"), h("code", { class: "break" }, info.publicUrl)),
          row(t("Restart mode"), h("code", {}, info.restartMode)))),
      h("section", { class: "card" }, h("h2", {}, t("Plugins")),
        h("dl", { class: "dl" },
          row(t("Plugin folder"), h("code", { class: "break" }, info.pluginsDir)),
          row(t("Plugins loaded"), String(info.pluginsLoaded)),
          row(t("Files that do not load"), errors.length ? badge("error", String(errors.length)) : badge("ok", "0"))),
        h("a", { href: "#/plugins" }, t("Manage plugins →")))),
    h("section", { class: errors.length ? "card card-error" : "card" },
      h("h2", {}, t("Plugin file errors")),
      errors.length ? h("ul", { class: "file-errors" }, errors.map((e) => h("li", {}, h("code", {}, e.file), h("pre", { class: "pre" }, e.error))))
        : h("p", { class: "muted" }, t("Every plugin file loads."))),
    h("section", { class: "card" },
      h("div", { class: "card-head" }, h("h2", {}, t("Restart")), restart),
      h("p", { class: "muted" }, t("Restart the server to pick up a new configuration file or an upgraded package. Plugin files are picked up without a restart.")),
      restartBox));
  return { cleanup: () => clearInterval(timer) };
}
