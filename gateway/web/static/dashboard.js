import { api, adminKey, ago, askForKey, backendName, escapeHtml, servedLabel, serverBadges, showQuickStats, toast } from "/static/app.js";
import { drawCharts } from "/static/charts.js";

const $ = (s) => document.querySelector(s);
let servers = [];
let timer = null;

function visible() {
  const model = $("#filter-model").value.trim().toLowerCase();
  const status = $("#filter-status").value;
  const student = $("#filter-student").value.trim().toLowerCase();
  const key = $("#sort").value;
  return servers
    .filter((s) => !model || s.served_models.some((m) => m.toLowerCase().includes(model)))
    .filter((s) => !status || s.health_status === status)
    .filter((s) => !student || (s.metadata.student_id || "").toLowerCase().includes(student))
    .sort((a, b) => {
      const field = (s) => (key === "model_name" ? s.model_name ?? s.served_models[0] : s[key]) || "";
      const x = field(a), y = field(b);
      const descending = key === "registered_at" || key === "last_checked_at";
      return descending ? String(y).localeCompare(String(x)) : String(x).localeCompare(String(y));
    });
}

function render() {
  const rows = visible();
  $("#stat-total").textContent = servers.length;
  for (const status of ["healthy", "unhealthy", "unknown"]) {
    $(`#stat-${status}`).textContent = servers.filter((s) => s.health_status === status).length;
  }
  $("#stat-models").textContent = new Set(servers.flatMap((s) => s.served_models)).size;
  const body = $("#servers tbody");
  if (!rows.length) {
    body.innerHTML = `<tr><td colspan="6" class="muted">${servers.length ? "No server matches the filters." : "No server registered yet. <a href=\"/register\">Register one</a>."}</td></tr>`;
    return;
  }
  body.innerHTML = rows.map((s) => `
    <tr>
      <td><a href="/servers/${encodeURIComponent(s.registration_id)}">${escapeHtml(servedLabel(s))}</a></td>
      <td>${serverBadges(s)}</td>
      <td><details class="url"><summary>${escapeHtml(s.endpoint_url.length > 32 ? s.endpoint_url.slice(0, 32) + "…" : s.endpoint_url)}</summary><code>${escapeHtml(s.endpoint_url)}</code></details></td>
      <td title="${escapeHtml(s.last_checked_at || "")}">${ago(s.last_checked_at)}</td>
      <td>${s.last_response_time_ms == null ? "–" : `${Math.round(s.last_response_time_ms)} ms`}</td>
      <td>${s.metadata.student_id ? `<a href="/owners/${encodeURIComponent(s.metadata.student_id)}">${escapeHtml(s.metadata.student_id)}</a>` : "–"}</td>
    </tr>`).join("");
}

const percent = (fraction) => (fraction == null ? "–" : `${Math.round(1000 * fraction) / 10} %`);

function difference(share, intended) {
  if (share == null) return "–";
  const points = Math.round(1000 * (share - intended)) / 10;
  return points === 0 ? "0 %" : `${points > 0 ? "+" : "−"}${Math.abs(points)} %`;
}

/** Load-balancing effectiveness: each backend's share of its model's requests in the
 * window against the share its strategy and weight meant it to get. */
function renderBalance(backends) {
  const rows = backends.flatMap((b) => b.shares.map((s) => ({ backend: b, ...s })))
    .sort((x, y) => x.model.localeCompare(y.model) || y.intended_share - x.intended_share);
  $("#balance tbody").innerHTML = rows.map((r) => `<tr>
      <td>${escapeHtml(r.model)}</td>
      <td><a href="/servers/${encodeURIComponent(r.backend.registration_id)}">${escapeHtml(backendName(r.backend))}</a></td>
      <td>${percent(r.share)}</td><td>${percent(r.intended_share)}</td>
      <td>${difference(r.share, r.intended_share)}</td>
    </tr>`).join("") || `<tr><td colspan="5" class="muted">No request in this window.</td></tr>`;
}

async function charts() {
  const stats = await drawCharts($("#charts"), $("#chart-window").value);
  const t = stats.totals;
  // Requests as clients saw them (a failover's tries are the chart's "attempts").
  $("#stat-requests").textContent = t.requests.toLocaleString();
  $("#stat-requests-label").textContent = `requests (${$("#chart-window").value})`;
  $("#traffic-totals").textContent = `${t.requests.toLocaleString()} requests, ${t.success_rate ?? "–"} % successful, ` +
    `p95 ${t.latency_p95_ms ?? "–"} ms, ${(t.prompt_tokens + t.completion_tokens).toLocaleString()} tokens.`;
  renderBalance(stats.backends);
}

async function load() {
  if (!adminKey()) {
    $("#servers tbody").innerHTML = `<tr><td colspan="6" class="muted">Enter the admin key to see the servers.</td></tr>`;
    askForKey();
    return;
  }
  try {
    servers = await api("/admin/servers");
    showQuickStats(servers);  // the header counts what this page lists
    $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    render();
    await charts();
  } catch (error) {
    toast("error", `${error.message}`);
    $("#updated").innerHTML = `Could not refresh. <button type="button" id="retry">Retry</button>`;
    $("#retry").addEventListener("click", load);
  }
}

export function start() {
  for (const id of ["#filter-model", "#filter-student"]) {
    let pending;
    $(id).addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(render, 200); });
  }
  $("#filter-status").addEventListener("change", render);
  $("#sort").addEventListener("change", render);
  $("#chart-window").addEventListener("change", () => charts().catch((error) => toast("error", error.message)));
  $("#refresh").addEventListener("click", load);
  window.addEventListener("admin-key", load);
  load();
  timer = setInterval(load, 30000);
}
