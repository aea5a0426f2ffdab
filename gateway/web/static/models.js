import { api, adminKey, escapeHtml, statusBadge, toast } from "/static/app.js";

const $ = (s) => document.querySelector(s);
let models = [];
let servers = [];
let claims = {};

function claimLine(id) {
  const claim = claims[id];
  if (!claim) return `<p class="claim muted">Open: any server that offers it serves it.</p>`;
  const hosts = claim.co_hosts.map((h) => `<a href="/servers/${encodeURIComponent(h)}"><code>${escapeHtml(h.slice(0, 8))}</code></a>`).join(", ");
  return `<p class="claim">Owned by <strong>${escapeHtml(claim.owner)}</strong> · co-hosts: ${hosts || "none"}</p>`;
}

function render() {
  const query = $("#model-search").value.trim().toLowerCase();
  const shown = models.filter((m) => m.id.toLowerCase().includes(query));
  if (!shown.length) { $("#models").innerHTML = `<p class="muted">${models.length ? "No model matches." : "No model registered yet."}</p>`; return; }
  $("#models").innerHTML = shown.map((m) => {
    const own = servers.filter((s) => s.served_models.includes(m.id));
    const total = own.length || m.available_servers;
    const percent = total ? Math.round((100 * m.available_servers) / total) : 0;
    return `<article class="card model">
      <h2>${escapeHtml(m.id)}</h2>
      <p><strong>${m.available_servers}</strong> healthy of <strong>${total}</strong> server(s) · ${percent} % healthy${m.max_model_len ? ` · context ${m.max_model_len.toLocaleString()} tokens` : ""}</p>
      ${claimLine(m.id)}
      <div class="bar" role="img" aria-label="${percent} percent healthy"><span style="width:${percent}%"></span></div>
      ${own.length ? `<details><summary>Servers</summary><ul>${own.map((s) => `<li>${statusBadge(s.health_status)} <a href="/servers/${encodeURIComponent(s.registration_id)}">${escapeHtml(s.endpoint_url)}</a> ${escapeHtml(s.metadata.student_id || "")}</li>`).join("")}</ul></details>` : ""}
    </article>`;
  }).join("");
}

async function load() {
  try {
    models = (await api("/v1/models?all=true", { admin: false })).data;
    claims = (await api("/registry", { admin: false })).claims || {};
    servers = adminKey() ? await api("/admin/servers") : [];
    render();
  } catch (error) { toast("error", error.message); }
}

export function start() {
  let pending;
  $("#model-search").addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(render, 150); });
  window.addEventListener("admin-key", load);
  load();
}
