// The Keys page: issue a key (shown once), list and revoke keys, set groups.
import { adminKey, ago, api, askForKey, escapeHtml, toast } from "/static/app.js";
import { keyBadge, limitsText, loadGroupChoices, readExpiry, readLimits, readModels } from "/static/limits.js";

const $ = (s) => document.querySelector(s);
let timer = null;

function required(id) {
  const problem = $(`#${id}`).value.trim() ? "" : "Required.";
  $(`#${id}-error`).textContent = problem;
  $(`#${id}`).setAttribute("aria-invalid", problem ? "true" : "false");
  return !problem;
}

async function loadKeys() {
  const params = new URLSearchParams();
  if ($("#f-owner").value.trim()) params.set("owner", $("#f-owner").value.trim());
  if ($("#f-group").value) params.set("group", $("#f-group").value);
  if ($("#f-revoked").checked) params.set("include_revoked", "true");
  const keys = await api(`/admin/keys?${params}`);
  $("#keys tbody").innerHTML = keys.map((k) => `<tr data-id="${escapeHtml(k.id)}">
    <td><a href="/keys/${encodeURIComponent(k.id)}"><code>${escapeHtml(k.prefix)}…</code></a></td>
    <td>${escapeHtml(k.name)}</td><td>${escapeHtml(k.owner)}</td><td>${escapeHtml(k.group || "–")}</td>
    <td>${keyBadge(k.status)}</td><td>${k.usage_today.requests.toLocaleString()}</td>
    <td>${(k.usage_today.prompt_tokens + k.usage_today.completion_tokens).toLocaleString()}</td>
    <td>${ago(k.last_used_at)}</td>
    <td>${k.status === "revoked" ? "" : `<button type="button" class="danger revoke" data-id="${escapeHtml(k.id)}" aria-label="Revoke ${escapeHtml(k.prefix)}… (${escapeHtml(k.owner)}, ${escapeHtml(k.name)})">Revoke</button>`}</td>
  </tr>`).join("") || `<tr><td colspan="9" class="muted">No key${params.toString() ? " matches" : " yet: issue one above"}.</td></tr>`;
}

async function loadGroups() {
  const groups = await loadGroupChoices();
  $("#groups tbody").innerHTML = groups.map((g) => `<tr>
    <td>${escapeHtml(g.name)}</td><td>${g.keys}</td><td>${escapeHtml(limitsText(g.limits))}</td>
    <td>${escapeHtml(g.models ? g.models.join(", ") : "every model")}</td>
    <td><button type="button" class="delete-group" data-name="${escapeHtml(g.name)}" aria-label="Delete group ${escapeHtml(g.name)}">Delete</button></td>
  </tr>`).join("") || `<tr><td colspan="5" class="muted">No group yet.</td></tr>`;
}

async function load() {
  if (!adminKey()) { askForKey(); return; }
  try { await loadGroups(); await loadKeys(); } catch (error) { toast("error", error.message); }
}

async function issue(event) {
  event.preventDefault();
  if (![required("c-owner"), required("c-name")].every(Boolean)) { toast("warning", "Please fix the highlighted fields."); return; }
  const body = { owner: $("#c-owner").value.trim(), name: $("#c-name").value.trim(), limits: readLimits("c-") };
  if ($("#c-group").value) body.group = $("#c-group").value;
  const models = readModels("c-models");
  if (models) body.models = models;
  const expires = readExpiry("c-expires");
  if (expires) body.expires_at = expires;
  $("#c-submit").disabled = true;
  try {
    const created = await api("/admin/keys", { method: "POST", body });
    $("#issued-key").textContent = created.key;
    $("#issued-link").href = `/keys/${encodeURIComponent(created.id)}`;
    $("#issued").hidden = false;
    $("#c-result").textContent = "";
    $("#key-create").reset();
    toast("success", `Key issued to ${created.owner}.`);
    await loadKeys();
  } catch (error) {
    $("#c-result").textContent = `Not issued: ${error.message}`;
    $("#c-result").className = "result bad";
  } finally { $("#c-submit").disabled = false; }
}

async function revoke(button) {
  const label = button.getAttribute("aria-label").replace(/^Revoke /, "");
  if (!confirm(`Revoke ${label}? Requests with it are refused within a second; this cannot be undone.`)) return;
  try {
    await api(`/admin/keys/${encodeURIComponent(button.dataset.id)}`, { method: "DELETE" });
    toast("success", `Revoked ${label}.`);
    await loadKeys();
  } catch (error) { toast("error", error.message); }
}

async function setGroup(event) {
  event.preventDefault();
  const name = $("#g-name").value.trim();
  if (!name) { toast("warning", "Give the group a name."); return; }
  try {
    await api(`/admin/groups/${encodeURIComponent(name)}`, { method: "PUT", body: { limits: readLimits("g-"), models: readModels("g-models") } });
    toast("success", `Group ${name} saved.`);
    $("#group-set").reset();
    await loadGroups();
  } catch (error) { toast("error", error.message); }
}

export function start() {
  $("#key-create").addEventListener("submit", issue);
  for (const id of ["c-owner", "c-name"]) $(`#${id}`).addEventListener("input", () => required(id));
  $("#copy-key").addEventListener("click", async () => {
    await navigator.clipboard.writeText($("#issued-key").textContent);
    toast("info", "Key copied.");
  });
  $("#issued-done").addEventListener("click", () => { $("#issued-key").textContent = ""; $("#issued").hidden = true; });
  $("#keys").addEventListener("click", (event) => { const b = event.target.closest("button.revoke"); if (b) revoke(b); });
  $("#groups").addEventListener("click", async (event) => {
    const b = event.target.closest("button.delete-group");
    if (!b || !confirm(`Delete group ${b.dataset.name}?`)) return;
    try { await api(`/admin/groups/${encodeURIComponent(b.dataset.name)}`, { method: "DELETE" }); toast("success", "Group deleted."); await loadGroups(); }
    catch (error) { toast("error", error.message); }
  });
  $("#group-set").addEventListener("submit", setGroup);
  $("#f-owner").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => loadKeys().catch((e) => toast("error", e.message)), 250); });
  for (const id of ["f-group", "f-revoked"]) $(`#${id}`).addEventListener("change", () => loadKeys().catch((e) => toast("error", e.message)));
  window.addEventListener("admin-key", load);
  load();
}
