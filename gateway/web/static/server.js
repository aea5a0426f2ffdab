import { adminKey, api, ago, escapeHtml, keepManagementToken, managementToken, servedLabel, serverBadges, statusBadge, toast } from "/static/app.js";
import { drawCharts } from "/static/charts.js";

const $ = (s) => document.querySelector(s);
const id = () => $("#server").dataset.id;
let server = null;
// Without the admin key, a host manages its own server with its management token.
const own = () => (adminKey() ? "" : managementToken(id()));
const call = (path, options = {}) => api(path, { ...options, token: own() });

// The load the server reports (vLLM, SGLang, llama.cpp, Ollama), as the gateway last read it.
function reportedLoad(load) {
  if (!load) return "not read (the only server of its models, or not healthy)";
  if (!load.source) return `unreadable: ${escapeHtml(load.problem || "")} (routing counts its own requests)`;
  const age = load.age_seconds == null ? "" : `, read ${load.age_seconds.toFixed(1)} s ago${load.stale ? " (stale: unknown)" : ""}`;
  if (load.loaded_models) return `${escapeHtml(load.source)}: in memory ${escapeHtml(load.loaded_models.join(", ") || "none")}${age}`;
  const kv = load.kv_cache_usage == null ? "" : `, KV cache ${Math.round(load.kv_cache_usage * 100)} %`;
  return `${escapeHtml(load.source)}: ${load.running} running, ${load.waiting} waiting${kv}${age}`;
}

function render() {
  const s = server;
  const row = (label, value) => `<dt>${label}</dt><dd>${value}</dd>`;
  $("#server").innerHTML = `<dl class="details">
    ${row("Serves", escapeHtml(servedLabel(s)))}
    ${row("Status", `${serverBadges(s)} since ${ago(s.status_changed_at)}`)}
    ${row("Endpoint URL", `<code>${escapeHtml(s.endpoint_url)}</code>`)}
    ${row("Registration ID", `<code>${escapeHtml(s.registration_id)}</code>`)}
    ${row("Registered", new Date(s.registered_at).toLocaleString())}
    ${row("Last check", `${ago(s.last_checked_at)}${s.last_error ? ` — ${escapeHtml(s.last_error)}` : ""}`)}
    ${row("Consecutive failures", s.consecutive_failures)}
    ${row("Uptime (24 h)", s.uptime_percent == null ? "–" : `${s.uptime_percent} %`)}
    ${row("Success rate (last 100)", s.success_rate == null ? "–" : `${s.success_rate} %`)}
    ${row("Mean response", s.avg_response_time_ms == null ? "–" : `${s.avg_response_time_ms} ms`)}
    ${row("Reported models", escapeHtml(s.reported_models.join(", ") || "–"))}
    ${row("Reported load", reportedLoad(s.reported_load))}
    ${s.owned_models.length ? row("Owns the names", escapeHtml(s.owned_models.join(", "))) : ""}
    ${Object.keys(s.model_faults).length ? row("Unhealthy for", `<ul class="faults">${Object.entries(s.model_faults).map(([m, why]) => `<li><strong>${escapeHtml(m)}</strong>: ${escapeHtml(why)}</li>`).join("")}</ul>`) : ""}
    ${row("Health traffic", `${s.canaries_sent} canary generation(s) of 1 token`)}
    ${Object.keys(s.model_mismatches).length ? row("Answers naming another model", `<ul class="mismatches">${Object.entries(s.model_mismatches).map(([m, c]) => `<li><strong>${escapeHtml(m)}</strong>: ${c.mismatched} of ${c.answers}${c.named ? ` (last: <code>${escapeHtml(c.named)}</code>)` : ""}${c.suspect ? " — suspect, out of routing until its canary passes" : ""}</li>`).join("")}</ul>`) : ""}
    ${s.withheld_models.length ? row("Does not serve", `<ul class="withheld">${s.withheld_models.map((w) => `<li><strong>${escapeHtml(w.model)}</strong>: ${escapeHtml(w.reason)}</li>`).join("")}</ul>`) : ""}
    ${row("Lease", s.lease_connected_at ? `held since ${ago(s.lease_connected_at)}, last heartbeat ${ago(s.lease_heartbeat_at)}` : s.lease_expires_at ? `ended; deactivated ${new Date(s.lease_expires_at).toLocaleString()} unless renewed` : "none (registered through the API)")}
    ${row("Owner", s.metadata.student_id ? `<a href="/owners/${encodeURIComponent(s.metadata.student_id)}">${escapeHtml(s.metadata.student_id)}</a>` : "–")}
    ${row("Description", escapeHtml(s.metadata.description || "–"))}
    ${row("Capabilities", `max tokens ${s.capabilities.max_tokens ?? "–"}, context ${s.capabilities.context_length ?? "–"}, streaming ${s.capabilities.streaming ? "yes" : "no"}`)}
    ${row("Routing", `priority ${s.priority}, weight ${s.weight}, max concurrent ${s.max_concurrent ?? "–"}, tags ${escapeHtml(s.tags.join(", ") || "–")}`)}
    ${row("Requests served", `${s.usage.requests} (${s.usage.failures} failed), tokens ${s.usage.prompt_tokens} in / ${s.usage.completion_tokens} out${s.usage.mean_latency_ms == null ? "" : `, mean ${s.usage.mean_latency_ms} ms`}`)}
    ${row("Backend API key", s.api_key_set ? "set (hidden)" : "none")}
    ${row("Active", s.is_active ? "yes" : "no (deregistered)")}
  </dl>`;
  const checks = [...s.recent_checks].reverse();
  $("#timeline").innerHTML = checks.map((c) => `<span role="listitem" class="tick ${c.status}" title="${escapeHtml(new Date(c.checked_at).toLocaleString())}: ${c.status}${c.error_message ? " — " + escapeHtml(c.error_message) : ""}"><span class="sr">${c.status}</span></span>`).join("") || `<span class="muted">No checks yet.</span>`;
  $("#checks tbody").innerHTML = s.recent_checks.map((c) => `<tr><td>${new Date(c.checked_at).toLocaleString()}</td><td>${statusBadge(c.status === "success" ? "healthy" : "unhealthy").replace(/healthy|unhealthy/, c.status)}</td><td>${c.response_time_ms == null ? "–" : `${Math.round(c.response_time_ms)} ms`}</td><td>${escapeHtml(c.error_message || "")}</td></tr>`).join("");
  $("#drain").textContent = s.draining ? "Resume (undrain)" : "Drain";
  $("#server-actions").hidden = false;
}

async function load() {
  if (!adminKey() && !managementToken(id())) {
    $("#server").innerHTML = `<p class="muted">Set the admin key, or paste this server's management token above.</p>`;
    return;
  }
  try {
    server = await call(`/admin/servers/${encodeURIComponent(id())}`);
    render();
    await drawCharts($("#server-charts"), "1h", `&backend=${encodeURIComponent(id())}`, undefined, own());
  }
  catch (error) { $("#server").innerHTML = `<p class="result bad">${escapeHtml(error.message)}</p>`; }
}

export function start() {
  $("#token-form").hidden = Boolean(adminKey());
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    keepManagementToken(id(), $("#token-input").value.trim());
    $("#token-input").value = "";
    toast("info", "Token kept in this tab; managing your server with it.");
    load();
  });
  $("#force-check").addEventListener("click", async () => {
    const before = server?.recent_checks.length ? server.recent_checks[0].checked_at : null;
    try {
      await call(`/admin/servers/${encodeURIComponent(id())}/check`, { method: "POST" });
      toast("info", "Health check requested; the result appears in a moment.");
      for (let attempt = 0; attempt < 20; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        await load();
        if (server?.recent_checks.length && server.recent_checks[0].checked_at !== before) {
          toast("success", `Checked: ${server.recent_checks[0].status}.`);
          return;
        }
      }
      toast("warning", "No result yet: is healthd running?");
    } catch (error) { toast("error", error.message); }
  });
  $("#drain").addEventListener("click", async () => {
    const action = server.draining ? "undrain" : "drain";
    try {
      server = await call(`/admin/servers/${encodeURIComponent(id())}/${action}`, { method: "POST" });
      toast("success", server.draining ? "Draining: no new requests; those in flight finish." : "Resumed.");
      await load();
    } catch (error) { toast("error", error.message); }
  });
  $("#copy-url").addEventListener("click", async () => {
    await navigator.clipboard.writeText(server.endpoint_url);
    toast("info", "Endpoint URL copied.");
  });
  $("#delete-server").addEventListener("click", async () => {
    if (!confirm(`Deregister ${servedLabel(server)} at ${server.endpoint_url}? Requests stop going to it at once.`)) return;
    try {
      await call(`/admin/register/${encodeURIComponent(id())}`, { method: "DELETE" });
      toast("success", "Server deregistered.");
      setTimeout(() => { location.href = "/"; }, 800);
    } catch (error) { toast("error", error.message); }
  });
  window.addEventListener("admin-key", load);
  load();
}
