// The web UI: plain modern JavaScript over the gateway's own REST API.
const KEY = "multiverse.adminKey";
const $ = (selector, root = document) => root.querySelector(selector);

export const adminKey = () => sessionStorage.getItem(KEY) || "";

export function toast(kind, message) {
  const box = document.createElement("div");
  box.className = `toast ${kind}`;
  box.textContent = message;
  $("#toasts").append(box);
  setTimeout(() => box.remove(), kind === "error" ? 8000 : 4000);
}

export class ApiError extends Error {
  /** `param`: the field the gateway refused (OpenAI's error `param`), if it named one. */
  constructor(status, message, param = null) { super(message); this.status = status; this.param = param; }
}

/** Show an ApiError under its field (`#${prefix}${param}-error`), if the form has one;
 * whether it did. */
export function showFieldError(error, prefix = "", fallback = "") {
  const name = error.param && document.getElementById(`${prefix}${error.param}-error`) ? error.param : fallback;
  const place = name && document.getElementById(`${prefix}${name}-error`);
  if (!place) return false;
  place.textContent = error.message;
  document.getElementById(`${prefix}${name}`)?.setAttribute("aria-invalid", "true");
  return true;
}

// Every call goes through here: the admin key, OpenAI-format errors, 429, network errors.
/** The management token a host pasted for one registration (this tab only). */
export const managementToken = (id) => sessionStorage.getItem(`multiverse.token.${id}`) || "";
export const keepManagementToken = (id, token) => sessionStorage.setItem(`multiverse.token.${id}`, token);

export async function api(path, { method = "GET", body, admin = true, token = "" } = {}) {
  const headers = {};
  if (token) headers["X-Management-Token"] = token;  // a host managing its own server
  // (/v1 takes the admin key too: once client keys exist, the pages need it there)
  else if (admin || adminKey()) headers["X-API-Key"] = adminKey();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "The gateway could not be reached. Check your connection and retry.");
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const message = data?.error?.message || `HTTP ${response.status}`;
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After") || "a few";
      throw new ApiError(429, `Too many requests; retry in ${wait} s. (${message})`);
    }
    if ((response.status === 401 || response.status === 403) && !token) askForKey();
    throw new ApiError(response.status, message, data?.error?.param ?? null);
  }
  return data;
}

export const escapeHtml = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

export function ago(iso) {
  if (!iso) return "never";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

/** What a registration serves, in a few words: its one model, or the models its server lists. */
export function servedLabel(s) {
  if (s.model_name) return s.backend_model ? `${s.model_name} (as ${s.backend_model})` : s.model_name;
  const names = s.served_models.join(", ");
  return s.served_models.length ? `all listed: ${names}` : "all listed (none yet)";
}

export const statusBadge = (status) => `<span class="badge ${escapeHtml(status)}">${escapeHtml(status)}</span>`;
/** A registration's health, and "draining" when it takes no new requests. */
export const serverBadges = (s) => statusBadge(s.health_status) + (s.draining ? ` <span class="badge unknown">draining</span>` : "");

function showKeyStatus() {
  $("#key-status").textContent = adminKey() ? "set" : "not set";
}

export function askForKey() {
  const dialog = $("#key-dialog");
  if (!dialog.open) dialog.showModal();
}

function setUpKeyDialog() {
  $("#key-button").addEventListener("click", askForKey);
  $("#key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY, $("#key-input").value.trim());
    $("#key-input").value = "";
    showKeyStatus();
    toast("success", "Admin key saved for this tab.");
    window.dispatchEvent(new Event("admin-key"));
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showKeyStatus();
    $("#key-dialog").close();
    toast("info", "Admin key forgotten.");
  });
  showKeyStatus();
}

/** The header's counts: `servers` as the admin API lists them (what the dashboard shows). */
export function showQuickStats(servers) {
  const healthy = servers.filter((s) => s.health_status === "healthy").length;  // as the dashboard's box
  $("#quick-servers").textContent = `${servers.length} server${servers.length === 1 ? "" : "s"}`;
  $("#quick-healthy").textContent = `${healthy} healthy`;
}

export async function refreshQuickStats() {
  try {
    if (adminKey()) {
      showQuickStats(await api("/admin/servers"));
      return;
    }
    // Without the key, the public registry; a server of several models counts once.
    const replicas = new Map();
    for (const list of Object.values((await api("/registry", { admin: false })).models)) {
      for (const r of list) replicas.set(r.replica_id, { health_status: r.health, draining: r.draining });
    }
    showQuickStats([...replicas.values()]);
  } catch { /* the header is a convenience; pages report their own errors */ }
}

/** A backend as a person tells it apart: a short id, its endpoint's host (never the URL's
 * path or userinfo) and description; `row` is a statistics backend or a registration. */
export function backendName(row) {
  const host = row.endpoint_host ?? (row.endpoint_url ? new URL(row.endpoint_url).host : "?");
  const description = row.description ?? row.metadata?.description;
  const name = `${row.registration_id.slice(0, 8)} ${host}`;
  return description ? `${name} (${description})` : name;
}

setUpKeyDialog();
refreshQuickStats();
window.addEventListener("admin-key", refreshQuickStats);
const page = document.body.dataset.page;
const pages = new Set(["dashboard", "register", "server", "edit", "owner", "models", "playground", "logs", "settings", "keys", "key"]);
if (pages.has(page)) import(`/static/${page}.js`).then((module) => module.start());
