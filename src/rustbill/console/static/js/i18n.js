// English and Chinese. Messages are keyed by their English text; zh.js holds the translations
// (a test checks that every key used by the console has one). The choice is remembered in
// localStorage under "rustbill.console.lang" (the language only: nothing else is stored there).

import { ZH } from "./zh.js";

const KEY = "rustbill.console.lang";
let current = initial();

function initial() {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved === "zh" || saved === "en") return saved;
  } catch {
    // storage blocked: fall back to the browser's language
  }
  const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
  for (const l of langs) {
    const s = String(l).toLowerCase();
    if (s.startsWith("zh")) return "zh";
    if (s.startsWith("en")) return "en";
  }
  return "en";
}

export function lang() {
  return current;
}

export function setLang(value) {
  current = value === "zh" ? "zh" : "en";
  try {
    localStorage.setItem(KEY, current);
  } catch {
    // not remembered; still switched
  }
  applyLang();
}

export function applyLang() {
  document.documentElement.lang = current === "zh" ? "zh-CN" : "en";
  document.title = t("RustBill console");
}

/** Marks a message for translation where it is defined; t() translates it where it is shown. */
export const N_ = (s) => s;

/** t("Deleted {name}", {name}) */
export function t(key, vars) {
  let s = current === "zh" && Object.prototype.hasOwnProperty.call(ZH, key) ? ZH[key] : key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}
