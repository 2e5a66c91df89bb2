// The Upstream page: per provider interface, its products, a price calculator driven by its spec
// template, its upstream instances (with import), its balance and an instance status lookup; for an
// upstream provider also what the drift watch found (with import of orphans).

import { integration, drift } from "../api.js";
import { h, clear, badge, fmtTime, notice, errorNotice, errorState, toast, busy, loading, nextId, errorTitle } from "../dom.js";
import { t, N_ } from "../i18n.js";

// QueryPriceRequest's own fields; every other spec field goes into extra_specs.
const SPEC_FIELDS = { cpu_cores: "cpuCores", memory_gb: "memoryGb", disk_gb: "diskGb", bandwidth_mbps: "bandwidthMbps",
  region: "region", os: "os" };
const NUMERIC = new Set(["cpu_cores", "memory_gb", "disk_gb", "bandwidth_mbps"]);
const FALLBACK_TEMPLATE = {
  fields: [
    { key: "cpu_cores", label: "CPU cores", fieldType: "Integer", required: true, min: "1", max: "0", defaultValue: "1" },
    { key: "memory_gb", label: "Memory (GB)", fieldType: "Integer", required: true, min: "1", max: "0", defaultValue: "1" },
    { key: "disk_gb", label: "Disk (GB)", fieldType: "Integer", required: false, min: "0", max: "0", defaultValue: "20" },
    { key: "bandwidth_mbps", label: "Bandwidth (Mbps)", fieldType: "Integer", required: false, min: "0", max: "0", defaultValue: "" },
    { key: "region", label: "Region", fieldType: "String" },
    { key: "os", label: "OS", fieldType: "String" },
  ],
  groups: [],
};

// Imports done in this tab, per interface: the API has no list of local instances to mark them
// from, so "imported" is known from Import's own answers (ALREADY_EXISTS included).
const imported = new Map();

export async function render(main, params, { navigate }) {
  const { providers = [] } = await integration("ListProviders", {});
  const selectedId = params[0] || (providers[0] && providers[0].interfaceId);
  const selected = providers.find((p) => p.interfaceId === selectedId);

  const head = h("div", { class: "page-head" }, h("div", {}, h("h1", {}, t("Upstream")),
    h("p", { class: "muted" }, t("Products, prices, instances and balance of each enabled provider interface."))));
  if (!providers.length) {
    clear(main, head, h("section", { class: "card" },
      h("p", {}, t("No enabled provider interface. Create one of a provider plugin on the Plugins page (or enable one there).")),
      h("a", { class: "btn btn-primary", href: "#/plugins" }, t("Go to Plugins"))));
    return {};
  }
  if (params[0] && !selected) {
    clear(main, head, errorState({ code: "not_found",
      message: t("No enabled provider interface {id}. It may be disabled, deleted, or not a provider.", { id: params[0] }) }),
    h("a", { class: "btn", href: "#/upstream" }, t("Show all providers")));
    return {};
  }

  const picker = h("nav", { class: "provider-list", "aria-label": t("Provider interfaces") },
    providers.map((p) => h("a", { href: `#/upstream/${p.interfaceId}`, class: "provider-link",
      "aria-current": p.interfaceId === selected.interfaceId ? "page" : null },
    h("span", { class: `dot ${p.isHealthy ? "dot-ok" : "dot-muted"}`, title: p.isHealthy ? t("Healthy") : t("Not healthy or not checked") }),
    h("span", { class: "provider-name" }, p.providerName),
    h("span", { class: "muted small" }, p.providerType === "upstream" ? t("upstream") : t("first-party")))));
  const select = h("select", { class: "provider-select", "aria-label": t("Provider interface") },
    providers.map((p) => h("option", { value: p.interfaceId }, `${p.providerName} (${p.providerType === "upstream" ? t("upstream") : t("first-party")})`)));
  select.value = selected.interfaceId;
  select.addEventListener("change", () => navigate(`/upstream/${select.value}`));

  const p = selected;
  clear(main, head,
    h("div", { class: "upstream-layout" },
      h("aside", { class: "upstream-side" }, select, picker),
      h("div", { class: "upstream-main" },
        h("div", { class: "provider-head card" },
          h("div", {},
            h("h2", {}, p.providerName),
            h("p", { class: "muted small" },
              p.providerType === "upstream" ? t("Upstream provider") : t("First-party provider"), " · ",
              h("code", { class: "break" }, p.interfaceId), " · ",
              h("a", { href: `#/interfaces/${p.interfaceId}` }, t("Interface settings")))),
          balanceBox(p)),
        p.providerType === "upstream" ? driftCard(p) : null,
        productsCard(p),
        priceCard(p),
        instancesCard(p),
        statusCard(p))));
  return {};
}

// ---------------------------------------------------------------- balance

function balanceBox(p) {
  const box = h("div", { class: "balance", "aria-live": "polite" });
  const refresh = h("button", { type: "button", class: "btn btn-small btn-ghost" }, t("Refresh"));
  async function load() {
    clear(box, h("span", { class: "muted small" }, t("Balance")), loading(t("Reading balance…")));
    try {
      const r = await integration("GetUpstreamBalance", { interfaceId: p.interfaceId });
      clear(box, h("span", { class: "muted small" }, t("Balance")),
        h("span", { class: "balance-amount" }, `${r.balance} ${r.currency}`), refresh);
    } catch (err) {
      if (err.code === "unimplemented") {
        clear(box, h("span", { class: "muted small" }, t("Balance")),
          h("span", { class: "muted" }, t("Not offered by this provider")));
      } else {
        clear(box, h("span", { class: "muted small" }, t("Balance")),
          h("span", { class: "text-error", role: "alert" }, `${errorTitle(err)}: ${err.message}`), refresh);
      }
    }
  }
  refresh.addEventListener("click", load);
  load();
  return box;
}

// ---------------------------------------------------------------- drift

// Per kind: label and badge. Events wait for an acknowledgement; conditions leave by themselves.
const DRIFT_KINDS = {
  price: [N_("Price changed"), "warn"],
  removed: [N_("Removed upstream"), "error"],
  offered_again: [N_("Offered again"), "info"],
  new: [N_("New product"), "info"],
  orphan: [N_("Orphan"), "warn"],
  gone: [N_("Unknown upstream"), "error"],
  low_balance: [N_("Low balance"), "error"],
};

function driftCard(p) {
  const out = h("div", { "aria-live": "polite" }, loading(t("Reading drift findings…")));
  const btn = h("button", { type: "button", class: "btn" }, t("Compare now"));
  function show(findings) {
    if (!findings.length) {
      clear(out, h("p", { class: "empty" }, t("No open findings: products, prices, instances and balance match the upstream.")));
      return;
    }
    const counts = {};
    for (const f of findings) counts[f.kind] = (counts[f.kind] || 0) + 1;
    clear(out,
      h("div", { class: "counts" }, Object.entries(DRIFT_KINDS).filter(([k]) => counts[k])
        .map(([k, [label, kind]]) => count(t(label), counts[k], kind === "error" ? "warn" : kind))),
      h("ul", { class: "findings" }, findings.map((f) => findingItem(p, f, () => {
        findings = findings.filter((x) => x.key !== f.key);
        show(findings);
      }))));
  }
  async function load(fn) {
    try {
      const r = await fn();
      show(r.findings || []);
    } catch (err) {
      clear(out, err.code === "unimplemented" ? notice("info", t("This provider cannot be compared: {detail}", { detail: err.message }))
        : errorNotice(err));
    }
  }
  btn.addEventListener("click", () => load(() => busy(btn, () => drift("CheckDrift", { interfaceId: p.interfaceId }))));
  load(() => drift("ListDriftFindings", { interfaceId: p.interfaceId }));
  return h("section", { class: "card", "data-card": "drift" },
    h("div", { class: "card-head" }, h("h2", {}, t("Drift")), btn),
    h("p", { class: "muted" }, t("What the drift watch found when it compared this upstream with this RustBill. Events stay until you acknowledge them; conditions leave the list once they are resolved.")),
    out);
}

function findingItem(p, f, removed) {
  const [label, kind] = DRIFT_KINDS[f.kind] || [f.kind, "muted"];
  const actions = h("div", { class: "row-actions" });
  const item = h("li", { class: "finding", "data-key": f.key, "data-kind": f.kind },
    h("div", { class: "finding-head" }, badge(kind, t(label)), h("span", { class: "muted small" }, fmtTime(f.createdAt))),
    h("p", { class: "finding-message" }, f.message), actions);
  if (f.kind === "orphan") {
    const b = h("button", { type: "button", class: "btn btn-small btn-primary" }, t("Import"));
    b.addEventListener("click", async () => {
      try {
        const r = await busy(b, () => integration("ImportUpstreamInstance", { interfaceId: p.interfaceId, instanceId: f.subject }));
        toast(t("Imported {id}", { id: f.subject }));
        imported.get(p.interfaceId)?.set(f.subject, { fresh: true, localId: r.instanceId });
        removed();
      } catch (err) {
        if (err.code === "already_exists") {
          removed();
          toast(t("Already imported"));
        } else {
          clear(actions, b, h("p", { class: "field-error", role: "alert" }, `${errorTitle(err)}: ${err.message}`));
        }
      }
    });
    actions.append(b);
  }
  if (f.acknowledgeable) {
    const b = h("button", { type: "button", class: "btn btn-small" }, t("Acknowledge"));
    b.addEventListener("click", async () => {
      try {
        await busy(b, () => drift("AcknowledgeDriftFinding", { interfaceId: p.interfaceId, key: f.key }));
        removed();
      } catch (err) {
        if (err.code === "not_found") removed();
        else clear(actions, b, h("p", { class: "field-error", role: "alert" }, `${errorTitle(err)}: ${err.message}`));
      }
    });
    actions.append(b);
  }
  return item;
}

// ---------------------------------------------------------------- products

function productsCard(p) {
  const out = h("div", { "aria-live": "polite" },
    h("p", { class: "muted" }, t("The provider's products are fetched and stored when you sync.")));
  const btn = h("button", { type: "button", class: "btn btn-primary" }, t("Sync products"));
  btn.addEventListener("click", async () => {
    clear(out, loading(t("Syncing products…")));
    try {
      const r = await busy(btn, () => integration("SyncProducts", { interfaceId: p.interfaceId }));
      const products = r.products || [];
      clear(out,
        h("div", { class: "counts" },
          count(t("created"), r.created, "ok"), count(t("updated"), r.updated, "info"),
          count(t("deactivated"), r.deactivated, "warn"), count(t("unchanged"), r.unchanged, "muted")),
        products.length ? productTable(products) : h("p", { class: "empty" }, t("The provider offers no products.")));
      toast(t("Products synced: {n}", { n: products.length }));
    } catch (err) {
      clear(out, err.code === "unimplemented" ? notice("info", t("This provider offers no product list (sync_products)."))
        : errorNotice(err));
    }
  });
  return h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, t("Products")), btn), out);
}

function count(label, n, kind) {
  return h("div", { class: `count count-${kind}` }, h("span", { class: "count-n" }, String(n || 0)), h("span", { class: "count-label" }, label));
}

function productTable(products) {
  const sorted = products.slice().sort((a, b) => (b.active - a.active) || a.name.localeCompare(b.name));
  return h("div", { class: "table-wrap" }, h("table", { class: "table" },
    h("thead", {}, h("tr", {}, [t("Product"), t("Upstream ID"), t("Price"), t("Billing cycles"), t("Specs"), t("Status")]
      .map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, sorted.map((x) => h("tr", { class: x.active ? "" : "row-muted" },
      h("td", { "data-label": t("Product") }, h("strong", {}, x.name), x.description ? h("div", { class: "muted small" }, x.description) : null),
      h("td", { "data-label": t("Upstream ID") }, h("code", {}, x.upstreamProductId)),
      h("td", { "data-label": t("Price"), class: "nowrap" }, `${x.price} ${x.currency}`),
      h("td", { "data-label": t("Billing cycles") }, Object.entries(x.billingCycles || {}).map(([k, v]) => h("div", { class: "small" }, `${k}: ${v}`))),
      h("td", { "data-label": t("Specs") }, Object.entries(x.specs || {}).map(([k, v]) => h("span", { class: "spec-chip" }, `${k}=${v}`))),
      h("td", { "data-label": t("Status") }, x.active ? badge("ok", t("Active")) : badge("muted", t("Inactive"))))))));
}

// ---------------------------------------------------------------- price calculator

function bound(v) {
  const n = Number(v);
  return Number.isFinite(n) ? n : 0;
}

function priceCard(p) {
  const tpl = p.specTemplate && p.specTemplate.fields && p.specTemplate.fields.length ? p.specTemplate : FALLBACK_TEMPLATE;
  const usingFallback = tpl === FALLBACK_TEMPLATE;
  const fields = tpl.fields.slice().sort((a, b) => (a.displayOrder || 0) - (b.displayOrder || 0));
  const controls = new Map();
  const grouped = new Set();
  const sections = [];
  const groups = (tpl.groups || []).slice().sort((a, b) => (a.displayOrder || 0) - (b.displayOrder || 0));
  for (const g of groups) {
    const inGroup = fields.filter((f) => (g.fieldKeys || []).includes(f.key));
    inGroup.forEach((f) => grouped.add(f.key));
    if (inGroup.length) sections.push(h("fieldset", { class: "fieldset" }, h("legend", {}, g.label || g.key), inGroup.map(specField)));
  }
  const rest = fields.filter((f) => !grouped.has(f.key));
  if (rest.length) {
    sections.push(groups.length ? h("fieldset", { class: "fieldset" }, h("legend", {}, t("Other")), rest.map(specField))
      : h("div", { class: "spec-grid" }, rest.map(specField)));
  }

  function specField(f) {
    const id = nextId("spec");
    const err = h("p", { class: "field-error", id: `${id}-err`, hidden: true });
    const type = f.fieldType || "String";
    let control;
    const common = { id, name: f.key, "aria-describedby": `${id}-err`, "aria-required": f.required ? "true" : null };
    const options = f.options || [];
    if (type === "Integer") {
      const lo = bound(f.min);
      const hi = bound(f.max);
      control = h("input", { ...common, type: "number", step: "1", inputmode: "numeric",
        min: lo || hi ? lo : null, max: hi > 0 ? hi : null, value: f.defaultValue || (lo > 0 ? String(lo) : "") });
    } else if (type === "Boolean") {
      control = h("input", { ...common, type: "checkbox", checked: f.defaultValue === "true" });
    } else if ((type === "Select" || type === "Region" || type === "OsOptions") && options.length) {
      control = h("select", common,
        f.required ? null : h("option", { value: "" }, t("— not set —")),
        options.map((o) => h("option", { value: o }, o)));
      control.value = options.includes(f.defaultValue) ? f.defaultValue : (f.required ? options[0] : "");
    } else {
      control = h("input", { ...common, type: "text", value: f.defaultValue || "", autocomplete: "off" });
    }
    controls.set(f.key, { f, control, err });
    const label = h("label", { for: id, class: "field-label" }, f.label || f.key,
      f.required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null, h("code", { class: "field-key" }, f.key));
    const range = type === "Integer" && (bound(f.min) || bound(f.max))
      ? h("p", { class: "help" }, bound(f.max) > 0 ? `${bound(f.min)} – ${bound(f.max)}` : `≥ ${bound(f.min)}`) : null;
    if (type === "Boolean") {
      return h("div", { class: "field field-check" }, h("div", { class: "check-row" }, control, label), err);
    }
    return h("div", { class: "field" }, label, control, range, err);
  }

  const result = h("div", { class: "price-result", "aria-live": "polite" });
  const history = h("tbody", {});
  const historyTable = h("table", { class: "table table-compact", hidden: true },
    h("thead", {}, h("tr", {}, h("th", {}, t("Spec")), h("th", {}, t("Price")))), history);
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, t("Get price"));
  const form = h("form", { class: "form", novalidate: true },
    usingFallback ? h("p", { class: "muted small" }, t("This provider has no spec template; the standard fields are shown.")) : null,
    sections, h("div", { class: "form-actions" }, submit));

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    for (const c of controls.values()) { c.err.hidden = true; c.control.removeAttribute("aria-invalid"); }
    const req = { interfaceId: p.interfaceId, extraSpecs: {} };
    const shown = [];
    let bad = null;
    for (const [key, { f, control, err }] of controls) {
      let v = control.type === "checkbox" ? String(control.checked) : control.value.trim();
      if (v === "" && f.required) {
        err.textContent = t("is required");
        err.hidden = false;
        control.setAttribute("aria-invalid", "true");
        bad = bad || control;
        continue;
      }
      if (v === "") continue;
      if (NUMERIC.has(key) || f.fieldType === "Integer") {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) {
          err.textContent = t("must be a whole number");
          err.hidden = false;
          control.setAttribute("aria-invalid", "true");
          bad = bad || control;
          continue;
        }
        v = NUMERIC.has(key) ? n : String(n);
      }
      if (SPEC_FIELDS[key]) req[SPEC_FIELDS[key]] = v;
      else req.extraSpecs[key] = String(v);
      shown.push(`${f.label || key}: ${v}`);
    }
    if (bad) {
      bad.focus();
      return;
    }
    clear(result, loading(t("Asking the provider…")));
    try {
      const r = await busy(submit, () => integration("QueryPrice", req));
      clear(result, h("div", { class: "price" }, h("span", { class: "price-amount" }, r.amount),
        h("span", { class: "price-currency" }, r.currency),
        r.billingCycle ? h("span", { class: "muted" }, ` / ${r.billingCycle}`) : null));
      history.prepend(h("tr", {}, h("td", { class: "small" }, shown.join(", ")),
        h("td", {}, `${r.amount} ${r.currency}${r.billingCycle ? ` / ${r.billingCycle}` : ""}`)));
      while (history.children.length > 5) history.lastChild.remove();
      historyTable.hidden = false;
    } catch (err) {
      const m = /^([a-z_]+) /.exec(err.message || "");
      const c = m && err.code === "invalid_argument" ? controls.get(m[1]) : null;
      if (c) {
        c.err.textContent = err.message;
        c.err.hidden = false;
        c.control.setAttribute("aria-invalid", "true");
        c.control.focus();
        clear(result);
      } else {
        clear(result, errorNotice(err));
      }
    }
  });
  return h("section", { class: "card" }, h("h2", {}, t("Price calculator")),
    h("div", { class: "price-layout" }, form, h("div", { class: "price-side" }, result, historyTable)));
}

// ---------------------------------------------------------------- upstream instances

function instancesCard(p) {
  const done = imported.get(p.interfaceId) || new Map();
  imported.set(p.interfaceId, done);
  const out = h("div", { "aria-live": "polite" },
    h("p", { class: "muted" }, t("Instances that exist at the provider. Import the ones this RustBill does not know yet.")));
  const btn = h("button", { type: "button", class: "btn btn-primary" }, t("Sync instances"));
  btn.addEventListener("click", async () => {
    clear(out, loading(t("Reading the provider's instances…")));
    try {
      const r = await busy(btn, () => integration("SyncUpstreamInstances", { interfaceId: p.interfaceId }));
      const list = r.instances || [];
      clear(out, list.length ? instanceTable(p, list, done)
        : h("p", { class: "empty" }, t("The provider reports no instances.")));
    } catch (err) {
      clear(out, err.code === "unimplemented" ? notice("info", t("Not offered by this provider (sync_upstream_instances)."))
        : errorNotice(err));
    }
  });
  return h("section", { class: "card" }, h("div", { class: "card-head" }, h("h2", {}, t("Upstream instances")), btn), out);
}

function instanceTable(p, list, done) {
  return h("div", { class: "table-wrap" }, h("table", { class: "table" },
    h("thead", {}, h("tr", {}, [t("Instance"), t("Status"), t("IP address"), t("Created"), ""].map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, list.map((i) => {
      const cell = h("td", { class: "col-actions" });
      const draw = () => {
        const mark = done.get(i.instanceId);
        if (mark) {
          clear(cell, badge("ok", mark.fresh ? t("Imported") : t("Already imported"), mark.localId ? `${t("Local instance")}: ${mark.localId}` : ""),
            mark.localId ? h("div", { class: "muted small mono break" }, mark.localId) : null);
          return;
        }
        const b = h("button", { type: "button", class: "btn btn-small" }, t("Import"));
        b.addEventListener("click", async () => {
          try {
            const r = await busy(b, () => integration("ImportUpstreamInstance", { interfaceId: p.interfaceId, instanceId: i.instanceId }));
            done.set(i.instanceId, { fresh: true, localId: r.instanceId });
            toast(t("Imported {id}", { id: i.instanceId }));
            draw();
          } catch (err) {
            if (err.code === "already_exists") {
              const m = / as ([0-9a-f-]{36})/.exec(err.message);
              done.set(i.instanceId, { fresh: false, localId: m ? m[1] : "" });
              draw();
            } else {
              clear(cell, b, h("p", { class: "field-error", role: "alert" }, `${errorTitle(err)}: ${err.message}`));
            }
          }
        });
        clear(cell, b);
      };
      draw();
      return h("tr", { "data-instance": i.instanceId },
        h("td", { "data-label": t("Instance") }, h("code", { class: "break" }, i.instanceId)),
        h("td", { "data-label": t("Status") }, statusBadge(i.status)),
        h("td", { "data-label": t("IP address") }, i.ipAddress || "—"),
        h("td", { "data-label": t("Created") }, fmtTime(i.createdAt)),
        cell);
    }))));
}

function statusBadge(status) {
  const s = String(status || "").toLowerCase();
  const kind = ["running", "active"].includes(s) ? "ok" : ["stopped", "suspended", "unknown"].includes(s) ? "warn"
    : ["failed", "error", "deleted"].includes(s) ? "error" : "muted";
  return badge(kind, status || "—");
}

// ---------------------------------------------------------------- status lookup

function statusCard(p) {
  const id = nextId("inst");
  const input = h("input", { id, name: "instance_id", autocomplete: "off", spellcheck: "false", required: true,
    placeholder: t("The provider's instance ID") });
  const out = h("div", { "aria-live": "polite" });
  const submit = h("button", { class: "btn", type: "submit" }, t("Look up"));
  const form = h("form", { class: "inline-form", novalidate: true },
    h("label", { for: id, class: "field-label" }, t("Instance ID")), h("div", { class: "inline-row" }, input, submit));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const instanceId = input.value.trim();
    if (!instanceId) {
      clear(out, notice("error", t("Enter an instance ID.")));
      input.focus();
      return;
    }
    clear(out, loading(t("Asking the provider…")));
    try {
      const r = await busy(submit, () => integration("GetInstanceStatus", { interfaceId: p.interfaceId, instanceId }));
      clear(out, h("dl", { class: "dl" }, h("dt", {}, t("Instance")), h("dd", {}, h("code", {}, instanceId)),
        h("dt", {}, t("Status")), h("dd", {}, statusBadge(r.status)),
        h("dt", {}, t("IP address")), h("dd", {}, r.ipAddress || "—")));
    } catch (err) {
      clear(out, err.code === "unimplemented" ? notice("info", t("Not offered by this provider (get_instance_status).")) : errorNotice(err));
    }
  });
  return h("section", { class: "card" }, h("h2", {}, t("Instance status")), form, out);
}
