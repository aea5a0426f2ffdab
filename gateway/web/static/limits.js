// What the Keys pages share: the limit inputs, model lists, group choices, expiry dates.
import { api, escapeHtml } from "/static/app.js";

export const LIMITS = ["requests_per_minute", "tokens_per_minute", "tokens_per_day", "max_concurrent", "priority"];

/** The limits typed in a form whose inputs' ids start with `prefix`: empty ones are left
 * out, or (`clear`) sent as null, which puts them back to the group's or default. */
export function readLimits(prefix, clear = false) {
  const limits = {};
  for (const name of LIMITS) {
    const value = document.getElementById(`${prefix}${name}`).value.trim();
    if (value !== "") limits[name] = Number(value);
    else if (clear) limits[name] = null;
  }
  return limits;
}

export function fillLimits(prefix, limits) {
  for (const name of LIMITS) document.getElementById(`${prefix}${name}`).value = limits[name] ?? "";
}

/** "a, b" → ["a", "b"]; empty → null (every model the group allows). */
export function readModels(id) {
  const names = document.getElementById(id).value.split(",").map((m) => m.trim()).filter(Boolean);
  return names.length ? names : null;
}

/** A date input's day as the end of nothing: that day's UTC midnight, or null. */
export const readExpiry = (id) => (document.getElementById(id).value ? `${document.getElementById(id).value}T00:00:00Z` : null);

export const limitsText = (limits) => Object.entries(limits).map(([k, v]) => `${k.replaceAll("_", " ")} ${v === 0 && k !== "priority" ? "none" : v}`).join(", ") || "–";

export const keyBadge = (status) => `<span class="badge ${escapeHtml(status)}">${escapeHtml(status)}</span>`;

/** Every `select.group-select` offers the groups there are (keeping its first option). */
export async function loadGroupChoices() {
  const groups = await api("/admin/groups");
  for (const select of document.querySelectorAll("select.group-select")) {
    const chosen = select.value;
    const first = select.options[0].outerHTML;
    select.innerHTML = first + groups.map((g) => `<option value="${escapeHtml(g.name)}">${escapeHtml(g.name)}</option>`).join("");
    select.value = groups.some((g) => g.name === chosen) ? chosen : "";
  }
  return groups;
}
