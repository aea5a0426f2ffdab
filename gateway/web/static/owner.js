import { api, adminKey, askForKey, escapeHtml, servedLabel, serverBadges, statusBadge, toast } from "/static/app.js";
import { drawCharts } from "/static/charts.js";

const $ = (s) => document.querySelector(s);

// The management tokens this tab holds (pasted on the servers' pages): without the
// admin key, an owner sees the servers whose tokens it holds, and nothing else.
function heldTokens() {
  return Object.keys(sessionStorage).filter((k) => k.startsWith("multiverse.token.")).map((k) => sessionStorage.getItem(k)).filter(Boolean);
}

async function ownServers(owner) {
  const found = [];
  for (const token of heldTokens()) {
    try { found.push(...(await api("/admin/servers", { token })).map((s) => ({ ...s, token }))); } catch { /* a token no longer valid */ }
  }
  return found.filter((s) => s.metadata.student_id === owner);
}

async function load() {
  const owner = $("#owner").dataset.owner;
  if (!adminKey() && !heldTokens().length) { askForKey(); return; }
  try {
    const servers = adminKey() ? await api(`/admin/servers?student_id=${encodeURIComponent(owner)}`) : await ownServers(owner);
    const first = servers[0];
    if (!adminKey() && !first) {
      $("#owner").innerHTML = `<p class="muted">No server of ${escapeHtml(owner)} whose management token this tab holds: paste it on the server's page.</p>`;
      return;
    }
    // With tokens only: the charts of the first server held (each token reads its own).
    const stats = adminKey()
      ? await drawCharts($("#owner-charts"), "24h", `&owner=${encodeURIComponent(owner)}`)
      : await drawCharts($("#owner-charts"), "24h", `&backend=${encodeURIComponent(first.registration_id)}`, undefined, first.token);
    const t = stats.totals;
    const c = stats.clients.totals;
    $("#owner").innerHTML = `<p><strong>${escapeHtml(owner)}</strong>: ${servers.length} server(s); in the last 24 hours
      ${t.requests.toLocaleString()} requests served, ${(t.prompt_tokens + t.completion_tokens).toLocaleString()} tokens.</p>
      <p>As a client: ${stats.keys.length} key(s); ${c.requests.toLocaleString()} requests made, ${(c.prompt_tokens + c.completion_tokens).toLocaleString()} tokens used.</p>`;
    $("#owner-servers tbody").innerHTML = servers.map((s) => `<tr>
      <td><a href="/servers/${encodeURIComponent(s.registration_id)}">${escapeHtml(servedLabel(s))}</a></td>
      <td>${serverBadges(s)}</td>
      <td>${s.uptime_percent == null ? "–" : `${s.uptime_percent} %`}</td>
      <td>${s.usage.requests.toLocaleString()}</td>
      <td>${(s.usage.prompt_tokens + s.usage.completion_tokens).toLocaleString()}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">No active server.</td></tr>`;
    $("#owner-keys tbody").innerHTML = stats.keys.map((k) => `<tr>
      <td><a href="/keys/${encodeURIComponent(k.id)}"><code>${escapeHtml(k.prefix)}…</code></a></td>
      <td>${escapeHtml(k.name)}${k.revoked ? " (revoked)" : ""}</td><td>${escapeHtml(k.group || "–")}</td>
      <td>${k.requests.toLocaleString()}</td>
      <td>${(k.prompt_tokens + k.completion_tokens).toLocaleString()}</td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">No client key.</td></tr>`;
  } catch (error) { toast("error", error.message); }
}

export function start() {
  window.addEventListener("admin-key", load);
  load();
}
