// A form generated from a plugin's JSON Schema (the interface's config_json).
//
// string → text input (textarea for long or PEM text), integer/number → number input, boolean →
// checkbox, enum → select, array of strings/numbers → one value per line (array of enum values →
// checkboxes), object with properties → fieldset, anything else (maps, arrays of objects) → a JSON
// text area. title → label, description → help text, required → marked, default → prefilled.
//
// Secrets ("format": "password" or "writeOnly": true) are write-only: the input never shows the
// stored value. When a value is stored (reads return it as the placeholder "********"), the field
// says "configured — leave blank to keep", and a blank field sends back what was read, which the
// server takes as "keep the stored secret".
//
// The server validates; its first error names a field (`config_json.smtp.port: …`), and
// showError() puts it next to that field.

import { h, nextId } from "./dom.js";
import { t } from "./i18n.js";

export const SECRET_PLACEHOLDER = "********";

const MULTILINE_MIN = 4000;

function isSecret(s) {
  return s && (s.format === "password" || s.writeOnly === true);
}

function typesOf(s) {
  if (!s || s.type === undefined) return [];
  return Array.isArray(s.type) ? s.type : [s.type];
}

function enumOf(s) {
  if (Array.isArray(s.enum)) return s.enum.map((v) => ({ value: v, label: v === "" ? t("(none)") : String(v) }));
  const alts = Array.isArray(s.oneOf) ? s.oneOf : Array.isArray(s.anyOf) ? s.anyOf : null;
  if (alts && alts.length && alts.every((a) => a && "const" in a)) {
    return alts.map((a) => ({ value: a.const, label: a.title || String(a.const) }));
  }
  return null;
}

function kindOf(s) {
  if (!s || typeof s !== "object") return "json";
  if (isSecret(s)) return "secret";
  if (enumOf(s)) return "enum";
  const types = typesOf(s).filter((x) => x !== "null");
  if (types.includes("string")) return isMultiline(s) ? "textarea" : "string";
  if (types.length === 1) {
    const ty = types[0];
    if (ty === "boolean") return "boolean";
    if (ty === "integer" || ty === "number") return "number";
    if (ty === "object" && s.properties && !s.additionalProperties) return "object";
    if (ty === "array" && s.items && !Array.isArray(s.items)) {
      if (enumOf(s.items)) return "multiselect";
      const it = typesOf(s.items);
      if (it.length === 1 && ["string", "integer", "number"].includes(it[0])) return "lines";
    }
  }
  if (types.length === 0 && s.properties && !s.additionalProperties) return "object";
  return "json";
}

function isMultiline(s) {
  if (s.format === "textarea" || s.contentMediaType) return true;
  const pattern = typeof s.pattern === "string" ? s.pattern : "";
  if (pattern.includes("BEGIN") || pattern.includes("[\\s\\S]")) return true;
  // Long text that may span lines (a pattern that refuses line breaks means one line).
  return typeof s.maxLength === "number" && s.maxLength >= MULTILINE_MIN && !/\\r|\\n/.test(pattern);
}

/** Ends a description with a full stop, so that hints can follow it. */
function sentence(text) {
  const s = String(text).trim();
  if (!s || /[.。!！?？:：)）]$/.test(s)) return s;
  return /[\u3000-\u9fff]$/.test(s) ? `${s}。` : `${s}.`;
}

function shapeHint(s) {
  const props = (x) => Object.entries((x && x.properties) || {})
    .map(([k]) => ((x.required || []).includes(k) ? `${k}*` : k)).join(", ");
  if (s.type === "object" && s.additionalProperties && typeof s.additionalProperties === "object") {
    const inner = s.additionalProperties;
    return inner.properties ? t("JSON: an object of name → {{keys}}", { keys: props(inner) })
      : t("JSON: an object of name → {type}", { type: typesOf(inner).join("|") || "value" });
  }
  if (s.type === "array" && s.items && s.items.properties) {
    return t("JSON: a list of {{keys}}", { keys: props(s.items) });
  }
  return t("JSON");
}

/**
 * buildSchemaForm(schema, {values, editing}) → {element, collect, showError, clearErrors, focusFirstError}
 * values: the stored config (edit) or {} (create).
 */
export function buildSchemaForm(schema, { values = {}, editing = false } = {}) {
  const fields = new Map(); // "a.b" → field
  const root = h("div", { class: "schema-form" });
  const top = schema && typeof schema === "object" ? schema : {};
  const rootObj = { properties: top.properties || {}, required: top.required || [] };
  const collectRoot = renderObject(rootObj, [], values || {}, root);

  function renderObject(s, path, value, container) {
    const collectors = [];
    const required = new Set(Array.isArray(s.required) ? s.required : []);
    for (const [key, sub] of Object.entries(s.properties || {})) {
      const v = value && typeof value === "object" ? value[key] : undefined;
      const c = renderField(key, sub || {}, [...path, key], v, required.has(key), container);
      collectors.push([key, c]);
    }
    return () => {
      const out = {};
      for (const [key, c] of collectors) {
        const r = c();
        if (r !== undefined) out[key] = r;
      }
      return out;
    };
  }

  function renderField(key, s, path, stored, required, container) {
    const kind = kindOf(s);
    const id = nextId("cfg");
    const helpId = `${id}-help`;
    const errId = `${id}-err`;
    const title = s.title || key;
    const err = h("p", { class: "field-error", id: errId, hidden: true });
    const has = stored !== undefined && stored !== null;
    const initial = has ? stored : s.default;

    if (kind === "object") {
      const fs = h("fieldset", { class: "fieldset", "data-path": path.join(".") },
        h("legend", {}, title, required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null,
          h("code", { class: "field-key" }, key)),
        s.description ? h("p", { class: "help" }, s.description) : null, err);
      container.append(fs);
      const inner = renderObject(s, path, initial && typeof initial === "object" ? initial : {}, fs);
      const field = { path, kind, control: fs, err, wrap: fs };
      fields.set(path.join("."), field);
      return () => {
        const o = inner();
        return Object.keys(o).length || required ? o : undefined;
      };
    }

    const label = h("label", { for: id, class: "field-label" }, title,
      required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null,
      h("code", { class: "field-key" }, key));
    const helpParts = [];
    if (s.description) helpParts.push(sentence(s.description));
    let control;
    let collect;
    const describedBy = `${helpId} ${errId}`;
    const common = { id, name: path.join("."), "aria-describedby": describedBy, "aria-required": required ? "true" : null };

    switch (kind) {
      case "secret": {
        const configured = editing && has && stored !== "";
        control = h("input", { ...common, type: "password", autocomplete: "new-password", spellcheck: "false",
          placeholder: configured ? t("configured — leave blank to keep") : "" });
        let clearBox = null;
        if (configured) {
          helpParts.unshift(t("A value is stored. It is never shown; leave the field blank to keep it."));
          if (!required) {
            clearBox = h("input", { type: "checkbox", id: `${id}-clear` });
            clearBox.addEventListener("change", () => { control.disabled = clearBox.checked; });
          }
        }
        collect = () => {
          if (clearBox && clearBox.checked) return "";
          if (control.value !== "") return control.value;
          return configured ? stored : undefined;
        };
        const wrap = fieldWrap(label, control, helpParts, helpId, err,
          configured ? h("span", { class: "badge badge-ok field-badge" }, t("configured")) : null,
          clearBox ? h("label", { class: "check-inline" }, clearBox, t("Remove the stored value")) : null);
        container.append(wrap);
        fields.set(path.join("."), { path, kind, control, err, wrap });
        return collect;
      }
      case "enum": {
        const options = enumOf(s);
        const sel = h("select", common);
        const hasEmpty = options.some((o) => o.value === "");
        if (!required && !hasEmpty && s.default === undefined) sel.append(h("option", { value: "" }, t("— not set —")));
        options.forEach((o, i) => sel.append(h("option", { value: String(i) }, o.label)));
        const idx = options.findIndex((o) => o.value === initial);
        sel.value = idx >= 0 ? String(idx) : (sel.querySelector('option[value=""]') ? "" : "0");
        if (idx < 0 && initial !== undefined) {
          // A stored value the schema does not list: keep it selectable rather than silently change it.
          sel.append(h("option", { value: "stored" }, `${String(initial)} ${t("(stored)")}`));
          sel.value = "stored";
        }
        control = sel;
        collect = () => {
          if (sel.value === "") return undefined;
          if (sel.value === "stored") return initial;
          return options[Number(sel.value)].value;
        };
        break;
      }
      case "boolean": {
        control = h("input", { ...common, type: "checkbox", checked: !!initial });
        collect = () => control.checked;
        const wrap = h("div", { class: "field field-check", "data-path": path.join(".") },
          h("div", { class: "check-row" }, control, label),
          err,
          helpParts.length ? h("p", { class: "help", id: helpId }, helpParts.join(" ")) : h("span", { id: helpId, hidden: true }));
        container.append(wrap);
        fields.set(path.join("."), { path, kind, control, err, wrap });
        return collect;
      }
      case "number": {
        const integer = typesOf(s).includes("integer");
        control = h("input", { ...common, type: "number", inputmode: integer ? "numeric" : "decimal",
          step: integer ? "1" : "any", min: s.minimum, max: s.maximum,
          value: initial !== undefined && initial !== null ? String(initial) : "" });
        const range = [s.minimum !== undefined ? `≥ ${s.minimum}` : "", s.maximum !== undefined ? `≤ ${s.maximum}` : ""]
          .filter(Boolean).join(", ");
        if (range) helpParts.push(`(${range})`);
        collect = () => {
          const raw = control.value.trim();
          if (raw === "") {
            if (control.validity && control.validity.badInput) throw fieldError(path, t("is not a number"));
            return undefined;
          }
          const n = Number(raw);
          if (!Number.isFinite(n)) throw fieldError(path, t("is not a number"));
          if (integer && !Number.isInteger(n)) throw fieldError(path, t("must be a whole number"));
          return n;
        };
        break;
      }
      case "string":
      case "textarea": {
        const text = initial !== undefined && initial !== null ? String(initial) : "";
        control = kind === "textarea"
          ? h("textarea", { ...common, rows: 4, spellcheck: "false", class: "mono" })
          : h("input", { ...common, type: s.format === "email" ? "email" : s.format === "uri" ? "url" : "text",
            spellcheck: "false", autocomplete: "off", maxlength: s.maxLength });
        control.value = text;
        collect = () => {
          const v = control.value;
          if (v.trim() === "") return undefined;
          return kind === "textarea" ? v : v.trim();
        };
        break;
      }
      case "multiselect": {
        const options = enumOf(s.items);
        const chosen = new Set(Array.isArray(initial) ? initial : []);
        const boxes = options.map((o) => h("input", { type: "checkbox", checked: chosen.has(o.value) }));
        control = h("div", { class: "check-group", role: "group", id, "aria-describedby": describedBy,
          "data-path": path.join(".") },
          options.map((o, i) => h("label", { class: "check-inline" }, boxes[i], o.label)));
        collect = () => {
          const out = options.filter((o, i) => boxes[i].checked).map((o) => o.value);
          return out.length ? out : undefined;
        };
        label.removeAttribute("for");
        label.id = `${id}-label`;
        control.setAttribute("aria-labelledby", label.id);
        break;
      }
      case "lines": {
        const numeric = typesOf(s.items).some((x) => x === "integer" || x === "number");
        control = h("textarea", { ...common, rows: 3, spellcheck: "false", class: "mono" });
        control.value = Array.isArray(initial) ? initial.join("\n") : "";
        helpParts.push(t("One value per line."));
        collect = () => {
          const lines = control.value.split("\n").map((x) => x.trim()).filter(Boolean);
          if (!lines.length) return undefined;
          if (!numeric) return lines;
          return lines.map((x) => {
            const n = Number(x);
            if (!Number.isFinite(n)) throw fieldError(path, t("{value} is not a number", { value: x }));
            return n;
          });
        };
        break;
      }
      default: {
        control = h("textarea", { ...common, rows: 3, spellcheck: "false", class: "mono" });
        control.value = initial !== undefined ? JSON.stringify(initial, null, 2) : "";
        helpParts.push(shapeHint(s));
        collect = () => {
          const raw = control.value.trim();
          if (raw === "") return undefined;
          try {
            return JSON.parse(raw);
          } catch (exc) {
            throw fieldError(path, t("is not valid JSON: {detail}", { detail: exc.message }));
          }
        };
      }
    }
    const wrap = fieldWrap(label, control, helpParts, helpId, err);
    container.append(wrap);
    fields.set(path.join("."), { path, kind, control, err, wrap });
    return collect;
  }

  function fieldWrap(label, control, helpParts, helpId, err, ...extra) {
    return h("div", { class: "field", "data-path": control.name || control.dataset.path || "" },
      h("div", { class: "label-row" }, label, extra[0] || null),
      control,
      err,
      extra[1] || null,
      helpParts.length ? h("p", { class: "help", id: helpId }, helpParts.join(" ")) : h("span", { id: helpId, hidden: true }));
  }

  function clearErrors() {
    for (const f of fields.values()) {
      f.err.hidden = true;
      f.err.textContent = "";
      f.wrap.classList.remove("has-error");
      if (f.control.setAttribute) f.control.removeAttribute("aria-invalid");
    }
  }

  /** Puts message at the field path names (["smtp", "port"] or "smtp.port"); false if none fits. */
  function showError(path, message) {
    const parts = Array.isArray(path) ? path : String(path).split(".");
    for (let n = parts.length; n > 0; n -= 1) {
      const head = parts.slice(0, n);
      if (head.some((p) => typeof p !== "string")) continue;
      const f = fields.get(head.join("."));
      if (f) {
        const rest = parts.slice(n).map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`)).join("").replace(/^\./, "");
        f.err.textContent = (rest ? `${rest}: ` : "") + message;
        f.err.hidden = false;
        f.wrap.classList.add("has-error");
        f.control.setAttribute("aria-invalid", "true");
        return true;
      }
    }
    return false;
  }

  function focusFirstError() {
    const f = [...fields.values()].find((x) => !x.err.hidden);
    if (!f) return;
    const target = f.kind === "object" ? f.wrap : f.control;
    if (target.scrollIntoView) target.scrollIntoView({ block: "center" });
    const focusable = target.matches("input, select, textarea") ? target : target.querySelector("input, select, textarea");
    if (focusable) focusable.focus();
  }

  /** The config object; throws a FieldError for input that cannot be sent (bad JSON, not a number). */
  function collect() {
    const out = collectRoot();
    // Keep stored keys the schema does not describe (a plugin that allows extra keys).
    if (editing && values && typeof values === "object") {
      for (const [k, v] of Object.entries(values)) {
        if (!(k in (rootObj.properties || {})) && !(k in out)) out[k] = v;
      }
    }
    return out;
  }

  return { element: root, collect, showError, clearErrors, focusFirstError };
}

export class FieldError extends Error {
  constructor(path, message) {
    super(message);
    this.path = path;
  }
}

function fieldError(path, message) {
  return new FieldError(path, message);
}

/**
 * The field path and message of a server validation error: "config_json.smtp.port: is required"
 * → {path: ["smtp", "port"], message: "is required"}; "config_json.plans[0].id: …" → ["plans", 0, "id"].
 * Other messages → null.
 */
export function parseConfigError(message) {
  const m = /^config_json((?:\.[A-Za-z0-9_$-]+|\[\d+\]|\['[^']*'\])*): (.*)$/s.exec(message || "");
  if (!m) return null;
  const path = [];
  const re = /\.([A-Za-z0-9_$-]+)|\[(\d+)\]|\['([^']*)'\]/g;
  let p;
  while ((p = re.exec(m[1])) !== null) {
    if (p[1] !== undefined) path.push(p[1]);
    else if (p[2] !== undefined) path.push(Number(p[2]));
    else path.push(p[3]);
  }
  return { path, message: m[2] };
}
