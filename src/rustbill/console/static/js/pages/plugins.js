// The plugin management page: the catalog by type, and each plugin's interfaces.

import { integration, system } from "../api.js";
import { h, clear, badge, healthBadge, fmtTime, fmtAgo, notice, errorNotice } from "../dom.js";
import { t, N_ } from "../i18n.js";
import { toggleInterface, deleteInterface, checkHealth, switchButton } from "./actions.js";

export const TYPES = [
  ["first_party_provider", N_("First-party providers"), N_("Your own hosts: KVM, Incus …")],
  ["upstream_provider", N_("Upstream providers"), N_("Servers resold from another provider")],
  ["gateway", N_("Payment gateways"), N_("How customers pay")],
  ["notifier", N_("Notifiers"), N_("Where notifications are sent")],
];

export function typeLabel(type) {
  const row = TYPES.find((x) => x[0] === type);
  return row ? t(row[1]) : type;
}

/** The plugin's name: its config schema's title ("KVM (libvirt)"), else its id. */
export function pluginTitle(p) {
  try {
    const s = JSON.parse(p.configSchema || "{}");
    if (s && typeof s.title === "string" && s.title.trim()) return s.title.trim();
  } catch {
    // no schema: the id will do
  }
  return p.pluginId;
}

/** What the plugin is: its docstring's first paragraph, without the leading "plugin_id — ". */
export function pluginSummary(p) {
  let text = [p.title || "", p.description || ""].join(" ").trim();
  for (const sep of [" — ", " - ", " – ", ": "]) {
    if (text.startsWith(p.pluginId + sep)) text = text.slice(p.pluginId.length + sep.length);
  }
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

let lastFilter = "all"; // the type filter, kept while the tab lives

export async function render(main, params, { navigate }) {
  const [plugins, ifaces, info] = await Promise.all([
    integration("ListPlugins", {}),
    integration("ListPluginInterfaces", {}),
    system("GetServerInfo", {}).catch((err) => ({ failed: err })),
  ]);
  const state = { filter: lastFilter, query: "" };
  const byPlugin = new Map();
  for (const i of ifaces.interfaces || []) {
    if (!byPlugin.has(i.pluginDefId)) byPlugin.set(i.pluginDefId, []);
    byPlugin.get(i.pluginDefId).push(i);
  }
  for (const list of byPlugin.values()) list.sort((a, b) => a.displayName.localeCompare(b.displayName));
  const all = (plugins.plugins || []).slice().sort((a, b) => a.pluginId.localeCompare(b.pluginId));

  const body = h("div", { class: "plugin-sections" });
  const search = h("input", { type: "search", class: "search", placeholder: t("Filter by name…"),
    "aria-label": t("Filter plugins and interfaces by name") });
  const chips = h("div", { class: "chips", role: "group", "aria-label": t("Plugin type") });

  function counts(type) {
    return all.filter((p) => type === "all" || p.pluginType === type).length;
  }

  function drawChips() {
    clear(chips, [["all", t("All")], ...TYPES.map(([k, label]) => [k, t(label)])].map(([k, label]) => {
      const b = h("button", { type: "button", class: "chip", "aria-pressed": state.filter === k ? "true" : "false" },
        label, h("span", { class: "chip-count" }, String(counts(k))));
      b.addEventListener("click", () => {
        state.filter = k;
        lastFilter = k;
        drawChips();
        draw();
      });
      return b;
    }));
  }

  function matches(p) {
    const q = state.query.trim().toLowerCase();
    if (!q) return true;
    const hay = [p.pluginId, p.title, ...(byPlugin.get(p.id) || []).map((i) => i.displayName)].join(" ").toLowerCase();
    return hay.includes(q);
  }

  function draw() {
    const sections = [];
    for (const [type, label, hint] of TYPES) {
      if (state.filter !== "all" && state.filter !== type) continue;
      const list = all.filter((p) => p.pluginType === type && matches(p));
      sections.push(h("section", { class: "type-section", "aria-labelledby": `type-${type}` },
        h("div", { class: "section-head" },
          h("h2", { id: `type-${type}` }, t(label)), h("span", { class: "muted small" }, t(hint))),
        list.length ? list.map((p) => pluginCard(p, byPlugin.get(p.id) || [], navigate, redrawLater))
          : h("p", { class: "empty" }, state.query ? t("No plugin matches the filter.") : t("No plugin of this type is installed."))));
    }
    const known = new Set(all.map((p) => p.id));
    const orphans = (ifaces.interfaces || []).filter((i) => !known.has(i.pluginDefId) && !i.deleted);
    if (orphans.length && state.filter === "all") {
      sections.push(h("section", { class: "type-section" }, h("h2", {}, t("Interfaces without a plugin definition")),
        h("article", { class: "card" }, interfaceTable(orphans, navigate, redrawLater))));
    }
    clear(body, sections);
  }

  function redrawLater() {
    draw();
  }

  search.addEventListener("input", () => { state.query = search.value; draw(); });
  drawChips();
  draw();

  const fileErrors = info.failed ? null : info.pluginErrors || [];
  clear(main,
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, t("Plugins")),
        h("p", { class: "muted" }, t("Installed plugins and their configured interfaces."),
          " ", info.failed ? "" : t("Plugin folder: {dir}", { dir: info.pluginsDir || "?" })))),
    info.failed ? errorNotice(info.failed) : null,
    fileErrors && fileErrors.length ? fileErrorsPanel(fileErrors) : null,
    h("div", { class: "toolbar" }, chips, search),
    body);
  return {};
}

function fileErrorsPanel(errors) {
  return h("section", { class: "card card-error", role: "alert" },
    h("h2", {}, t("Plugin files that do not load ({n})", { n: errors.length })),
    h("p", { class: "muted" }, t("Fix these files in the plugins folder; the server picks up the change by itself. A plugin whose new version fails keeps running its last good version.")),
    h("ul", { class: "file-errors" }, errors.map((e) => h("li", {}, h("code", {}, e.file), h("pre", { class: "pre" }, e.error)))));
}

function pluginCard(p, list, navigate, redraw) {
  const title = pluginTitle(p);
  const summary = pluginSummary(p);
  const newBtn = h("a", { class: "btn btn-primary btn-small", href: `#/plugins/${p.id}/new` }, t("New interface"));
  const broken = !p.filePresent || !p.configSchema;
  if (broken) {
    newBtn.classList.add("is-disabled");
    newBtn.setAttribute("aria-disabled", "true");
    newBtn.removeAttribute("href");
    newBtn.title = !p.filePresent ? t("The plugin file is missing") : t("The plugin is not loaded");
  }
  return h("article", { class: "card plugin-card", "data-plugin": p.pluginId },
    h("header", { class: "plugin-head" },
      h("div", { class: "plugin-title" },
        h("h3", {}, title),
        h("p", { class: "meta" },
          h("code", {}, p.pluginId), h("span", { class: "dot-sep" }, "·"), `v${p.version}`,
          h("span", { class: "dot-sep" }, "·"), h("span", { class: "mono small" }, `plugins/${p.pluginId}.py`),
          p.hasAdminPage ? badge("info", t("Admin page")) : null,
          !p.filePresent ? badge("error", t("File missing")) : null,
          p.loadError ? badge("error", t("Load error")) : null)),
      newBtn),
    summary ? h("p", { class: "plugin-desc" }, summary) : null,
    !p.filePresent ? notice("error", t("plugins/{id}.py is missing. Its interfaces are kept, and their calls fail until the file is back.", { id: p.pluginId })) : null,
    p.loadError ? h("details", { class: "load-error", open: true },
      h("summary", {}, p.filePresent && p.configSchema ? t("The current file does not load; the last good version stays in use") : t("The file does not load")),
      h("pre", { class: "pre" }, p.loadError)) : null,
    list.length ? interfaceTable(list, navigate, redraw)
      : h("p", { class: "empty" }, t("No interface yet.")));
}

export function interfaceTable(list, navigate, redraw) {
  return h("table", { class: "table iface-table" },
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, t("Interface")),
      h("th", { scope: "col" }, t("Status")),
      h("th", { scope: "col" }, t("Health")),
      h("th", { scope: "col", class: "col-actions" }, h("span", { class: "sr-only" }, t("Actions"))))),
    h("tbody", {}, list.map((i) => interfaceRow(i, list, navigate, redraw))));
}

// Rows update the interface objects of `list` in place, so that a redraw shows what changed.
function interfaceRow(initial, list, navigate, redraw) {
  let iface = initial;
  const keep = (updated) => { Object.assign(initial, updated); iface = initial; };
  const tr = h("tr", { "data-interface": iface.id });

  function healthCell(extra) {
    const when = iface.lastCheckAt ? h("span", { class: "muted small", title: fmtTime(iface.lastCheckAt) },
      t("checked {ago}", { ago: fmtAgo(iface.lastCheckAt) })) : null;
    const err = !iface.isHealthy && iface.healthError ? h("p", { class: "health-error" }, iface.healthError) : null;
    return h("td", { "data-label": t("Health") }, h("div", { class: "health" }, healthBadge(iface), when), err, extra || null);
  }

  function draw(extraHealth) {
    const toggle = switchButton(iface);
    toggle.addEventListener("click", async () => {
      const updated = await toggleInterface(iface, toggle);
      if (updated) { keep(updated); draw(); }
    });
    const health = h("button", { type: "button", class: "btn btn-small" }, t("Check health"));
    health.addEventListener("click", async () => {
      const r = await checkHealth(iface, health);
      if (!r) return;
      if (r.failed) { draw(h("p", { class: "health-error" }, `${t("Health check failed")}: ${r.error}`)); return; }
      keep({ isHealthy: r.isHealthy, healthError: r.error || "", lastCheckAt: r.checkedAt });
      draw();
    });
    const del = h("button", { type: "button", class: "btn btn-small btn-danger-ghost" }, t("Delete"));
    del.addEventListener("click", async () => {
      const outcome = await deleteInterface(iface, del);
      if (outcome && typeof outcome === "object") {
        keep(outcome);
        draw();
      } else if (outcome) {
        initial.deleted = true;
        const at = list.indexOf(initial);
        if (at >= 0) list.splice(at, 1);
        tr.remove();
        if (redraw) redraw();
      }
    });
    clear(tr,
      h("td", { "data-label": t("Interface") },
        h("a", { href: `#/interfaces/${iface.id}`, class: "iface-name" }, iface.displayName),
        h("div", { class: "muted small" }, `v${iface.pluginVersion}`)),
      h("td", { "data-label": t("Status") }, toggle),
      healthCell(extraHealth),
      h("td", { class: "col-actions" }, h("div", { class: "row-actions" },
        health,
        iface.hasAdminPage ? h("a", { class: "btn btn-small", href: `#/interfaces/${iface.id}/page` }, t("Admin page")) : null,
        h("a", { class: "btn btn-small", href: `#/interfaces/${iface.id}` }, t("Edit")),
        del)));
  }
  draw();
  return tr;
}

