// Interface actions shared by the plugin list and the interface page: enable/disable, delete,
// health check. Each confirms what deserves it, and reports its outcome (never silently).

import { integration } from "../api.js";
import { h, confirmDialog, toast, busy, errorTitle } from "../dom.js";
import { t } from "../i18n.js";

/** Toggle; resolves the updated interface, or null when cancelled or failed (already reported). */
export async function toggleInterface(iface, button) {
  const enable = !iface.enabled;
  if (!enable) {
    const ok = await confirmDialog({
      title: t("Disable {name}?", { name: iface.displayName }),
      message: t("While it is disabled every call to this interface fails (FAILED_PRECONDITION): no orders, payments or notifications go through it. You can enable it again at any time."),
      confirmLabel: t("Disable"), danger: true,
    });
    if (!ok) return null;
  }
  try {
    const r = await busy(button, () => integration("TogglePluginInterface", { interfaceId: iface.id, enable }));
    toast(enable ? t("{name} is enabled", { name: iface.displayName }) : t("{name} is disabled", { name: iface.displayName }));
    return r.interface;
  } catch (err) {
    toast(`${errorTitle(err)}: ${err.message}`, "error");
    return null;
  }
}

/**
 * Delete after confirmation; resolves true when deleted. FAILED_PRECONDITION (instances left) is
 * explained, with an offer to disable instead: then the updated interface is resolved.
 */
export async function deleteInterface(iface, button) {
  const ok = await confirmDialog({
    title: t("Delete {name}?", { name: iface.displayName }),
    message: t("The interface and its configuration are deleted for good. Interfaces that still have local instances cannot be deleted; disable those instead."),
    details: h("p", { class: "mono small" }, `${iface.pluginId} · ${iface.id}`),
    confirmLabel: t("Delete"), danger: true,
  });
  if (!ok) return false;
  try {
    await busy(button, () => integration("DeletePluginInterface", { interfaceId: iface.id }));
    toast(t("{name} is deleted", { name: iface.displayName }));
    return true;
  } catch (err) {
    if (err.code === "failed_precondition") {
      const disable = await confirmDialog({
        title: t("{name} cannot be deleted", { name: iface.displayName }),
        message: h("div", {}, h("p", {}, err.message),
          h("p", { class: "muted" }, t("Disable the interface instead: it then takes no new calls, and its instances keep their records."))),
        confirmLabel: iface.enabled ? t("Disable it") : t("OK"),
        cancelLabel: t("Close"),
        alert: !iface.enabled,
      });
      if (disable && iface.enabled) {
        try {
          const r = await busy(button, () => integration("TogglePluginInterface", { interfaceId: iface.id, enable: false }));
          toast(t("{name} is disabled", { name: iface.displayName }));
          return r.interface;
        } catch (e) {
          toast(`${errorTitle(e)}: ${e.message}`, "error");
        }
      }
    } else {
      toast(`${errorTitle(err)}: ${err.message}`, "error");
    }
    return false;
  }
}

/** CheckPluginHealth; resolves {isHealthy, error, checkedAt} or null (reported). */
export async function checkHealth(iface, button) {
  try {
    const r = await busy(button, () => integration("CheckPluginHealth", { interfaceId: iface.id }));
    if (r.isHealthy) toast(t("{name} is healthy", { name: iface.displayName }));
    else toast(`${t("{name} is unhealthy", { name: iface.displayName })}: ${r.error || ""}`, "error");
    return r;
  } catch (err) {
    toast(`${t("Health check failed")}: ${errorTitle(err)}: ${err.message}`, "error");
    return { isHealthy: false, error: `${err.code}: ${err.message}`, checkedAt: new Date().toISOString(), failed: true };
  }
}

/** The enable/disable switch (role=switch); setSwitch() redraws it after a toggle. */
export function switchButton(iface) {
  const b = h("button", { type: "button", class: "switch", role: "switch" },
    h("span", { class: "switch-track", "aria-hidden": "true" }, h("span", { class: "switch-thumb" })),
    h("span", { class: "switch-label" }));
  setSwitch(b, iface);
  return b;
}

export function setSwitch(b, iface) {
  b.setAttribute("aria-checked", iface.enabled ? "true" : "false");
  b.setAttribute("aria-label", t("Enabled: {name}", { name: iface.displayName }));
  b.querySelector(".switch-label").textContent = iface.enabled ? t("Enabled") : t("Disabled");
}
