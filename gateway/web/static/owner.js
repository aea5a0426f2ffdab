import { api, adminKey, askForKey, escapeHtml, servedLabel, serverBadges, statusBadge, toast } from "/static/app.js";
import { drawCharts } from "/static/charts.js";

const $ = (s) => document.querySelector(s);

async function load() {
  const owner = $("#owner").dataset.owner;
  if (!adminKey()) { askForKey(); return; }
  try {
    const servers = await api(`/admin/servers?student_id=${encodeURIComponent(owner)}`);
    const stats = await drawCharts($("#owner-charts"), "24h", `&owner=${encodeURIComponent(owner)}`);
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
