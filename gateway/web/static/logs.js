import { api, escapeHtml, toast } from "/static/app.js";

const $ = (s) => document.querySelector(s);
let timer = null;

async function load() {
  const params = new URLSearchParams();
  if ($("#log-level").value) params.set("level", $("#log-level").value);
  if ($("#log-component").value) params.set("component", $("#log-component").value);
  if ($("#log-since").value) params.set("since", new Date(Date.now() - Number($("#log-since").value) * 1000).toISOString());
  if ($("#log-text").value.trim()) params.set("q", $("#log-text").value.trim());
  try {
    const { entries } = await api(`/admin/logs?${params}`);
    $("#logs tbody").innerHTML = entries.length ? entries.map((e) => {
      const { timestamp, level, component, message, request_id, process, ...rest } = e;
      const extra = Object.entries(rest).map(([k, v]) => `${escapeHtml(k)}=${escapeHtml(typeof v === "string" ? v : JSON.stringify(v))}`).join(" ");
      return `<tr><td>${escapeHtml(timestamp ? new Date(timestamp).toLocaleString() : "")}</td><td><span class="level ${escapeHtml(level)}">${escapeHtml(level)}</span></td><td>${escapeHtml(component)} <small class="muted">${escapeHtml(process)}</small></td><td>${escapeHtml(message)} <small class="muted">${extra}</small></td><td><code>${escapeHtml(request_id || "")}</code></td></tr>`;
    }).join("") : `<tr><td colspan="5" class="muted">No entry matches.</td></tr>`;
  } catch (error) { toast("error", error.message); }
}

export function start() {
  for (const id of ["#log-level", "#log-component", "#log-since"]) $(id).addEventListener("change", load);
  let pending;
  $("#log-text").addEventListener("input", () => { clearTimeout(pending); pending = setTimeout(load, 300); });
  $("#log-refresh").addEventListener("click", load);
  $("#log-tail").addEventListener("change", () => {
    clearInterval(timer);
    if ($("#log-tail").checked) timer = setInterval(load, 2000);
  });
  window.addEventListener("admin-key", load);
  load();
}
