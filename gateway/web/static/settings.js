import { api, escapeHtml, toast } from "/static/app.js";

const $ = (s) => document.querySelector(s);
const table = (rows) => `<div class="table-wrap" tabindex="0" role="region" aria-label="Scrollable table"><table><tbody>${rows.map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td><code>${escapeHtml(typeof v === "string" ? v : JSON.stringify(v))}</code></td></tr>`).join("")}</tbody></table></div>`;

function duration(seconds) {
  const hours = Math.floor(seconds / 3600), minutes = Math.floor((seconds % 3600) / 60);
  return hours ? `${hours} h ${minutes} min` : `${minutes} min ${Math.round(seconds % 60)} s`;
}

async function load() {
  try {
    const info = await api("/admin/system");
    $("#system").innerHTML = `
      <p>Up for <strong>${duration(info.uptime_seconds)}</strong>. Settings are read-only here: change them in the environment or <code>.env</code> and restart.</p>
      <h2>Configuration</h2>${table(Object.entries(info.settings))}
      <h2>Versions</h2>${table(Object.entries(info.versions))}
      <h2>Database</h2>${table(Object.entries(info.database))}`;
  } catch (error) { toast("error", error.message); }
}

export function start() {
  window.addEventListener("admin-key", load);
  load();
}
