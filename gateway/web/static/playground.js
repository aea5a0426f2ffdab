import { adminKey, api, backendName, escapeHtml, toast } from "/static/app.js";

const $ = (s) => document.querySelector(s);

async function loadModels() {
  try {
    const models = (await api("/v1/models?all=true", { admin: false })).data;
    $("#pg-model").innerHTML = models.map((m) => `<option value="${escapeHtml(m.id)}">${escapeHtml(m.id)} (${m.available_servers} healthy)</option>`).join("");
    if (!models.length) $("#pg-model").innerHTML = `<option value="">no model registered</option>`;
  } catch (error) { toast("error", error.message); }
}

function request() {
  const messages = [];
  if ($("#pg-system").value.trim()) messages.push({ role: "system", content: $("#pg-system").value.trim() });
  messages.push({ role: "user", content: $("#pg-message").value });
  return {
    model: $("#pg-model").value,
    messages,
    temperature: Number($("#pg-temperature").value),
    max_tokens: Number($("#pg-max-tokens").value),
    stream: $("#pg-stream").checked,
    ...($("#pg-stream").checked ? { stream_options: { include_usage: true } } : {}),
  };
}

function showUsage(usage) {
  if (usage) $("#pg-tokens").textContent = `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion = ${usage.total_tokens}`;
}

/** The server that answered: by name (with the admin key), else by its registration id. */
async function showServer(id) {
  $("#pg-server").textContent = id || "–";
  if (!id || !adminKey()) return;
  try {
    const server = await api(`/admin/servers/${encodeURIComponent(id)}`);
    $("#pg-server").innerHTML = `<a href="/servers/${encodeURIComponent(id)}" title="${escapeHtml(id)}">${escapeHtml(backendName(server))}</a>`;
  } catch { /* the id alone is still right */ }
}

async function send(event) {
  event.preventDefault();
  const body = request();
  $("#pg-reply").textContent = "";
  $("#pg-busy").hidden = false;
  $("#pg-send").disabled = true;
  const started = performance.now();
  try {
    const headers = { "Content-Type": "application/json" };
    if (adminKey()) headers["X-API-Key"] = adminKey();  // /v1 needs a key once keys exist
    const response = await fetch("/v1/chat/completions", { method: "POST", headers, body: JSON.stringify(body) });
    showServer(response.headers.get("X-Gateway-Server-ID"));
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw new Error(data?.error?.message || `HTTP ${response.status}`);
    }
    if (!body.stream) {
      const data = await response.json();
      $("#pg-reply").textContent = data.choices?.[0]?.message?.content ?? "";
      showUsage(data.usage);
    } else {
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        const events = buffer.split("\n\n");
        buffer = events.pop();
        for (const event of events) {
          const data = event.replace(/^data: ?/, "");
          if (!data || data === "[DONE]") continue;
          let chunk;
          try { chunk = JSON.parse(data); } catch { continue; }
          if (chunk.error) throw new Error(chunk.error.message);
          $("#pg-reply").textContent += chunk.choices?.[0]?.delta?.content ?? "";
          showUsage(chunk.usage);
        }
      }
    }
    $("#pg-time").textContent = `${Math.round(performance.now() - started)} ms`;
  } catch (error) {
    toast("error", error.message);
    $("#pg-reply").textContent += `\n[error] ${error.message}`;
  } finally {
    $("#pg-busy").hidden = true;
    $("#pg-send").disabled = false;
  }
}

export function start() {
  loadModels();
  $("#playground-form").addEventListener("submit", send);
}
