// One interface: create (from the plugin's schema), view and edit, and its admin page.

import { integration, system } from "../api.js";
import { h, clear, badge, healthBadge, fmtTime, fmtAgo, notice, errorNotice, errorState, toast, busy,
  copyButton, loading, nextId } from "../dom.js";
import { t } from "../i18n.js";
import { buildSchemaForm, parseConfigError, FieldError } from "../schemaform.js";
import { mountPluginPage } from "../bridge.js";
import { pluginTitle, pluginSummary, typeLabel } from "./plugins.js";
import { toggleInterface, deleteInterface, checkHealth, switchButton, setSwitch } from "./actions.js";

const PROVIDER_TYPES = ["first_party_provider", "upstream_provider"];

function parseSchema(text) {
  if (!text) return null;
  try {
    const s = JSON.parse(text);
    return s && typeof s === "object" ? s : null;
  } catch {
    return null;
  }
}

function parseConfig(text) {
  try {
    const c = JSON.parse(text || "{}");
    return c && typeof c === "object" ? c : {};
  } catch {
    return {};
  }
}

function backLink(href, label) {
  return h("a", { class: "back", href }, "← ", label);
}

/**
 * The interface form: display name + the schema's fields. onSubmit({displayName, config}) may throw
 * an ApiError, which is shown at the field it names (or above the buttons).
 */
function interfaceForm({ schema, values, name, editing, submitLabel, onSubmit, onCancel }) {
  const nameId = nextId("name");
  const nameErr = h("p", { class: "field-error", id: `${nameId}-err`, hidden: true });
  const nameInput = h("input", { id: nameId, name: "display_name", required: true, "aria-required": "true",
    autocomplete: "off", maxlength: 200, value: name || "", "aria-describedby": `${nameId}-help ${nameId}-err` });
  const nameField = h("div", { class: "field" },
    h("div", { class: "label-row" }, h("label", { for: nameId, class: "field-label" }, t("Display name"),
      h("span", { class: "req", "aria-hidden": "true" }, " *"))),
    nameInput,
    h("p", { class: "help", id: `${nameId}-help` }, t("A name for this configuration, unique for the plugin (e.g. 易支付-生产).")),
    nameErr);
  const sf = buildSchemaForm(schema || {}, { values, editing });
  const status = h("div", { class: "form-status", "aria-live": "polite" });
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, submitLabel);
  const cancel = onCancel ? h("button", { class: "btn", type: "button" }, t("Cancel")) : null;
  if (cancel) cancel.addEventListener("click", onCancel);
  const noFields = !schema || !schema.properties || !Object.keys(schema.properties).length;
  const form = h("form", { class: "form", novalidate: true },
    nameField,
    noFields ? h("p", { class: "muted" }, t("This plugin has no configuration fields.")) : null,
    sf.element,
    status,
    h("div", { class: "form-actions" }, submit, cancel));
  let dirty = false;
  form.addEventListener("input", () => { dirty = true; });
  form.addEventListener("change", () => { dirty = true; });

  function clearAll() {
    sf.clearErrors();
    nameErr.hidden = true;
    nameInput.removeAttribute("aria-invalid");
    nameField.classList.remove("has-error");
    clear(status);
  }
  function nameError(message) {
    nameErr.textContent = message;
    nameErr.hidden = false;
    nameInput.setAttribute("aria-invalid", "true");
    nameField.classList.add("has-error");
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearAll();
    let config;
    try {
      config = sf.collect();
    } catch (err) {
      if (err instanceof FieldError) {
        sf.showError(err.path, err.message);
        clear(status, notice("error", t("Fix the marked field.")));
        sf.focusFirstError();
        return;
      }
      throw err;
    }
    const displayName = nameInput.value.trim();
    if (!displayName) {
      nameError(t("is required"));
      clear(status, notice("error", t("Fix the marked field.")));
      nameInput.focus();
      return;
    }
    clear(status, loading(t("Saving…")));
    submit.disabled = true;
    try {
      await onSubmit({ displayName, config });
      dirty = false;
      clear(status);
    } catch (err) {
      clear(status);
      const placed = placeError(err);
      clear(status, placed ? notice("error", t("The server refused the configuration; see the marked field."),
        h("span", { class: "small mono" }, ` (${err.message})`)) : errorNotice(err));
      if (placed === "name") nameInput.focus();
      else if (placed) sf.focusFirstError();
      else status.scrollIntoView({ block: "nearest" });
    } finally {
      submit.disabled = false;
    }
  });

  function placeError(err) {
    if (!err || !err.message) return false;
    if (err.code === "already_exists" || /^display_name\b/.test(err.message)) {
      nameError(err.message.replace(/^display_name:?\s*/, ""));
      return "name";
    }
    if (err.code !== "invalid_argument") return false;
    const parsed = parseConfigError(err.message);
    if (parsed && parsed.path.length && sf.showError(parsed.path, parsed.message)) return "field";
    return false;
  }

  return { form, isDirty: () => dirty };
}

// ---------------------------------------------------------------- create

export async function renderCreate(main, [defId], { navigate }) {
  const { plugin } = await integration("GetPlugin", { id: defId });
  const schema = parseSchema(plugin.configSchema);
  const head = h("div", { class: "page-head" }, h("div", {},
    backLink("#/plugins", t("Plugins")),
    h("h1", {}, t("New {plugin} interface", { plugin: pluginTitle(plugin) })),
    h("p", { class: "muted" }, h("code", {}, plugin.pluginId), ` · ${typeLabel(plugin.pluginType)} · v${plugin.version}`)));
  if (!plugin.filePresent || !schema) {
    clear(main, head, errorState({ code: "failed_precondition",
      message: plugin.loadError || t("The plugin is not loaded; fix its file in the plugins folder first.") }));
    return {};
  }
  const f = interfaceForm({
    schema, values: {}, name: "", editing: false, submitLabel: t("Create interface"),
    onCancel: () => navigate("/plugins"),
    onSubmit: async ({ displayName, config }) => {
      const r = await integration("CreatePluginInterface", {
        pluginDefId: plugin.id, displayName, configJson: JSON.stringify(config),
      });
      toast(t("{name} is created", { name: r.interface.displayName }));
      navigate(`/interfaces/${r.interface.id}`);
    },
  });
  clear(main, head,
    pluginSummary(plugin) ? h("p", { class: "plugin-desc" }, pluginSummary(plugin)) : null,
    schema.description ? h("p", { class: "plugin-desc" }, schema.description) : null,
    h("section", { class: "card" }, f.form));
  const first = f.form.querySelector("input");
  return { isDirty: f.isDirty, onShown: () => { if (first) first.focus(); } };
}

// ---------------------------------------------------------------- detail / edit

export async function renderDetail(main, [id], ctx) {
  const { interface: iface } = await integration("GetPluginInterface", { interfaceId: id });
  const [pluginReply, info] = await Promise.all([
    integration("GetPlugin", { id: iface.pluginDefId }).catch(() => null),
    system("GetServerInfo", {}).catch(() => null),
  ]);
  const plugin = pluginReply ? pluginReply.plugin : null;
  const schema = parseSchema(iface.configSchema);
  const values = parseConfig(iface.configJson);
  let page = { isDirty: () => false };

  const rerender = async () => {
    const fresh = await renderDetail(main, [id], ctx);
    page = fresh;
  };

  const toggle = switchButton(iface);
  const disabledNote = h("div", {});
  const drawEnabled = () => {
    setSwitch(toggle, iface);
    clear(disabledNote, !iface.enabled
      ? notice("info", t("This interface is disabled: every call to it fails until it is enabled again.")) : null);
  };
  drawEnabled();
  toggle.addEventListener("click", async () => {
    const updated = await toggleInterface(iface, toggle);
    if (updated) {
      iface.enabled = updated.enabled;
      drawEnabled();
    }
  });
  const healthBtn = h("button", { type: "button", class: "btn" }, t("Check health"));
  const healthBox = h("div", { class: "health-box" });
  const drawHealth = (r, failed) => {
    clear(healthBox,
      h("div", { class: "health" }, healthBadge(r),
        r.lastCheckAt ? h("span", { class: "muted small" }, `${t("Last check")}: ${fmtTime(r.lastCheckAt)} (${fmtAgo(r.lastCheckAt)})`)
          : h("span", { class: "muted small" }, t("No health check has run yet."))),
      failed ? notice("error", `${t("Health check failed")}: ${failed}`) : null,
      !r.isHealthy && r.healthError ? h("div", {}, h("p", { class: "small muted" }, t("Last error")),
        h("pre", { class: "pre pre-error" }, r.healthError)) : null);
  };
  drawHealth(iface);
  healthBtn.addEventListener("click", async () => {
    const r = await checkHealth(iface, healthBtn);
    if (!r) return;
    if (r.failed) drawHealth(iface, r.error);
    else {
      Object.assign(iface, { isHealthy: r.isHealthy, healthError: r.error || "", lastCheckAt: r.checkedAt });
      drawHealth(iface);
    }
  });
  const del = h("button", { type: "button", class: "btn btn-danger-ghost" }, t("Delete"));
  del.addEventListener("click", async () => {
    const outcome = await deleteInterface(iface, del);
    if (outcome && typeof outcome === "object") {
      iface.enabled = outcome.enabled;
      drawEnabled();
    } else if (outcome) {
      ctx.navigate("/plugins");
    }
  });

  const f = interfaceForm({
    schema, values, name: iface.displayName, editing: true, submitLabel: t("Save changes"),
    onCancel: null,
    onSubmit: async ({ displayName, config }) => {
      await integration("UpdatePluginInterface", { interfaceId: iface.id, displayName, configJson: JSON.stringify(config) });
      // Shown again as stored (secrets as "configured"); then said.
      try {
        await rerender();
      } catch (err) {
        toast(`${t("Saved, but the page could not be reloaded")}: ${err.message}`, "error");
        return;
      }
      toast(t("{name} is saved; the next call uses the new configuration", { name: displayName }));
    },
  });

  const currentSchema = plugin && plugin.configSchema ? parseSchema(plugin.configSchema) : null;
  const schemaChanged = currentSchema && JSON.stringify(currentSchema) !== JSON.stringify(schema);
  const notifyUrl = iface.pluginType === "gateway" && info && info.publicUrl
    ? `${info.publicUrl.replace(/\/$/, "")}/pay/notify/${iface.id}` : null;

  clear(main,
    h("div", { class: "page-head" },
      h("div", {},
        backLink("#/plugins", t("Plugins")),
        h("h1", {}, iface.displayName),
        h("p", { class: "muted" }, plugin ? pluginTitle(plugin) : iface.pluginId, " · ", h("code", {}, iface.pluginId),
          ` · ${typeLabel(iface.pluginType)} · v${iface.pluginVersion}`)),
      h("div", { class: "head-actions" }, toggle,
        iface.hasAdminPage ? h("a", { class: "btn", href: `#/interfaces/${iface.id}/page` }, t("Admin page")) : null,
        PROVIDER_TYPES.includes(iface.pluginType) && iface.enabled
          ? h("a", { class: "btn", href: `#/upstream/${iface.id}` }, t("Upstream page")) : null,
        del)),
    disabledNote,
    plugin && !plugin.filePresent ? notice("error", t("plugins/{id}.py is missing: calls to this interface fail until the file is back.", { id: iface.pluginId })) : null,
    h("div", { class: "grid-2" },
      h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, t("Health")), healthBtn), healthBox),
      h("section", { class: "card" }, h("h2", {}, t("Details")),
        h("dl", { class: "dl" },
          h("dt", {}, t("Interface ID")), h("dd", {}, h("code", { class: "break" }, iface.id), " ", copyButton(iface.id)),
          h("dt", {}, t("Created")), h("dd", {}, fmtTime(iface.createdAt)),
          h("dt", {}, t("Updated")), h("dd", {}, fmtTime(iface.updatedAt)),
          notifyUrl ? [h("dt", {}, t("Payment notification URL")),
            h("dd", {}, h("code", { class: "break" }, notifyUrl), " ", copyButton(notifyUrl))] : null))),
    h("section", { class: "card" },
      h("h2", {}, t("Configuration")),
      schemaChanged ? notice("info", t("The plugin's current version describes its configuration differently. This form follows the schema stored when the interface was created, which the server validates against.")) : null,
      f.form));
  page = { isDirty: f.isDirty };
  return { isDirty: () => page.isDirty() };
}

// ---------------------------------------------------------------- admin page

export async function renderAdminPage(main, [id]) {
  const { interface: iface } = await integration("GetPluginInterface", { interfaceId: id });
  const head = h("div", { class: "page-head" }, h("div", {},
    backLink(`#/interfaces/${iface.id}`, iface.displayName),
    h("h1", {}, t("Admin page")),
    h("p", { class: "muted" }, `${iface.displayName} · `, h("code", {}, iface.pluginId))));
  if (!iface.hasAdminPage) {
    clear(main, head, notice("info", t("This plugin has no admin page.")));
    return {};
  }
  const frameBox = h("div", { class: "frame-box" });
  const log = h("tbody", {});
  const logTable = h("table", { class: "table table-compact" },
    h("thead", {}, h("tr", {}, h("th", {}, t("Time")), h("th", {}, t("Action")), h("th", {}, t("Result")), h("th", {}, t("Duration")))),
    log);
  const logEmpty = h("p", { class: "muted small" }, t("The page has not run any action yet."));
  const reload = h("button", { type: "button", class: "btn btn-small" }, t("Reload page"));
  const titleEl = h("h2", { class: "frame-title" }, "");
  let bridge = null;

  async function load() {
    if (bridge) bridge.destroy();
    bridge = null;
    clear(frameBox, loading(t("Loading the plugin's page…")));
    let page;
    try {
      page = await busy(reload, () => integration("GetPluginAdminPage", { interfaceId: iface.id }));
    } catch (err) {
      clear(frameBox, errorState(err, load),
        err.code === "failed_precondition" && !iface.enabled
          ? notice("info", t("The interface is disabled; enable it to use its admin page.")) : null);
      return;
    }
    titleEl.textContent = page.title || iface.displayName;
    clear(frameBox);
    bridge = mountPluginPage(frameBox, {
      interfaceId: iface.id,
      html: page.htmlContent,
      title: page.title || iface.displayName,
      onCall: (c) => {
        logEmpty.remove();
        log.prepend(h("tr", { class: c.ok ? "" : "row-error" },
          h("td", { "data-label": t("Time") }, new Date().toLocaleTimeString()),
          h("td", { "data-label": t("Action") }, h("code", {}, c.function || "?")),
          h("td", { "data-label": t("Result") }, c.ok ? badge("ok", t("OK")) : [badge("error", c.code), " ", c.message]),
          h("td", { "data-label": t("Duration") }, c.ms ? `${c.ms} ms` : "—")));
        while (log.children.length > 50) log.lastChild.remove();
      },
      onNavigated: () => {
        frameBox.prepend(notice("error", t("The plugin's page navigated away from itself; its actions are no longer answered. Reload the page.")));
      },
    });
  }
  reload.addEventListener("click", load);

  clear(main, head,
    h("section", { class: "card card-frame" },
      h("div", { class: "card-head" }, titleEl, reload),
      h("p", { class: "muted small" }, t("The plugin's own page, isolated from the console: it cannot see your session, and it can only run this interface's admin actions.")),
      frameBox),
    h("section", { class: "card" }, h("h2", {}, t("Actions run by this page")), logEmpty, logTable));
  await load();
  return { cleanup: () => { if (bridge) bridge.destroy(); } };
}
