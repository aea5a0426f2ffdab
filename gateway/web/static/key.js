// One client key: its details and usage (a chart, as a server's page has), changes, revoke.
import { adminKey, ago, api, askForKey, escapeHtml, toast } from "/static/app.js";
import { drawCharts } from "/static/charts.js";
import { fillLimits, keyBadge, limitsText, loadGroupChoices, readExpiry, readLimits, readModels } from "/static/limits.js";

const $ = (s) => document.querySelector(s);
const id = () => $("#key").dataset.id;
let key = null;

function render() {
  const k = key;
  const row = (label, value) => `<dt>${label}</dt><dd>${value}</dd>`;
  const u = k.usage_today;
  $("#key").innerHTML = `<dl class="details">
    ${row("Key", `<code>${escapeHtml(k.prefix)}…</code> (the rest is not kept)`)}
    ${row("Name", escapeHtml(k.name))}
    ${row("Owner", escapeHtml(k.owner))}
    ${row("Group", escapeHtml(k.group || "–"))}
    ${row("Status", `${keyBadge(k.status)}${k.revoked_at ? ` since ${new Date(k.revoked_at).toLocaleString()}` : ""}`)}
    ${row("Own limits", escapeHtml(limitsText(k.limits)))}
    ${row("Limits that apply", escapeHtml(limitsText(k.effective_limits)))}
    ${row("Models", escapeHtml(k.allowed_models ? k.allowed_models.join(", ") || "none" : "every model"))}
    ${row("Created", new Date(k.created_at).toLocaleString())}
    ${row("Last used", ago(k.last_used_at))}
    ${row("Expires", k.expires_at ? new Date(k.expires_at).toLocaleString() : "never")}
    ${row("Today", `${u.requests} requests (${u.failures} failed), tokens ${u.prompt_tokens} in / ${u.completion_tokens} out`)}
  </dl>`;
  const editable = k.status !== "revoked";
  $("#key-actions").hidden = !editable;
  $("#key-edit").hidden = !editable;
}

function fillForm() {
  $("#k-name").value = key.name;
  $("#k-group").value = key.group || "";
  $("#k-models").value = (key.models || []).join(", ");
  $("#k-expires").value = key.expires_at ? key.expires_at.slice(0, 10) : "";
  fillLimits("k-", key.limits);
}

async function load() {
  if (!adminKey()) { askForKey(); return; }
  try {
    await loadGroupChoices();
    key = await api(`/admin/keys/${encodeURIComponent(id())}`);
    render();
    fillForm();
    const stats = await drawCharts($("#key-charts"), "24h", `&key=${encodeURIComponent(id())}`, (s) => s.clients.series);
    const t = stats.clients.totals;
    $("#key-totals").textContent = `${t.requests.toLocaleString()} requests, ${(t.prompt_tokens + t.completion_tokens).toLocaleString()} tokens in the last 24 hours.`;
  } catch (error) { $("#key").innerHTML = `<p class="result bad">${escapeHtml(error.message)}</p>`; }
}

async function save(event) {
  event.preventDefault();
  const body = {
    name: $("#k-name").value.trim(), group: $("#k-group").value || null, models: readModels("k-models"),
    expires_at: readExpiry("k-expires"), limits: readLimits("k-", true),
  };
  if (body.expires_at === (key.expires_at ? `${key.expires_at.slice(0, 10)}T00:00:00Z` : null)) delete body.expires_at;  // unchanged
  try {
    key = await api(`/admin/keys/${encodeURIComponent(id())}`, { method: "PATCH", body });
    render();
    fillForm();
    toast("success", "Saved.");
  } catch (error) { toast("error", error.message); }
}

export function start() {
  $("#key-edit").addEventListener("submit", save);
  $("#revoke-key").addEventListener("click", async () => {
    if (!confirm(`Revoke ${key.prefix}… (${key.owner}, ${key.name})? Requests with it are refused within a second; this cannot be undone.`)) return;
    try {
      key = await api(`/admin/keys/${encodeURIComponent(id())}`, { method: "DELETE" });
      render();
      toast("success", "Key revoked.");
    } catch (error) { toast("error", error.message); }
  });
  window.addEventListener("admin-key", load);
  load();
}
