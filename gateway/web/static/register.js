import { api, showFieldError, toast } from "/static/app.js";

const $ = (s) => document.querySelector(s);
const MODEL = /^[^\x00-\x1f\x7f]{1,256}$/;

function check(id) {
  const input = $(`#${id}`);
  const value = input.value.trim();
  let problem = "";
  if (id === "model_name" || id === "backend_model") {
    if (value && !MODEL.test(value)) problem = "Use 1 to 256 printable characters.";
    else if (id === "backend_model" && value && !$("#model_name").value.trim()) problem = "Give the model name clients use too.";
  } else if (id === "endpoint_url") {
    if (!value) problem = "Required.";
    else {
      try {
        const url = new URL(value);
        if (url.protocol !== "http:" && url.protocol !== "https:") problem = "Must start with http:// or https://.";
      } catch { problem = "Not a valid URL."; }
    }
  } else if (value && !(Number.isInteger(Number(value)) && Number(value) > 0)) {
    problem = "A positive whole number.";
  }
  $(`#${id}-error`).textContent = problem;
  input.setAttribute("aria-invalid", problem ? "true" : "false");
  return !problem;
}

const checked = ["model_name", "backend_model", "endpoint_url", "max_tokens", "context_length"];
const valid = () => checked.map(check).every(Boolean);
// Judged by the gateway alone (its list of formats, its address rules, who owns a name).
const serverChecked = ["notify_url", "notify_format", "claim", ...checked];

function body() {
  const number = (id) => ($(`#${id}`).value ? Number($(`#${id}`).value) : null);
  const data = {
    model_name: $("#model_name").value.trim() || null,
    backend_model: $("#backend_model").value.trim() || null,
    endpoint_url: $("#endpoint_url").value.trim(),
    capabilities: { max_tokens: number("max_tokens"), context_length: number("context_length"), streaming: $("#streaming").checked },
    metadata: { student_id: $("#student_id").value.trim() || null, description: $("#description").value.trim() || null },
  };
  if ($("#api_key").value) data.api_key = $("#api_key").value;
  if ($("#notify_url").value.trim()) data.notify_url = $("#notify_url").value.trim();
  if ($("#notify_format").value.trim()) data.notify_format = $("#notify_format").value.trim();
  if ($("#claim").checked) data.claim = true;
  return data;
}

function busy(on) {
  $("#register-busy").hidden = !on;
  $("#register-submit").disabled = on;
  $("#test-connection").disabled = on;
}

async function testConnection() {
  if (!check("endpoint_url")) return false;
  busy(true);
  $("#test-result").textContent = "Testing…";
  try {
    const result = await api("/admin/probe", { method: "POST", body: { endpoint_url: $("#endpoint_url").value.trim(), api_key: $("#api_key").value || null } });
    const models = result.reported_models.length ? ` It serves: ${result.reported_models.join(", ")}.` : "";
    $("#test-result").textContent = `Reachable and healthy (${Math.round(result.response_time_ms)} ms).${models}`;
    $("#test-result").className = "result ok";
    return true;
  } catch (error) {
    $("#test-result").textContent = `Connection test failed: ${error.message}`;
    $("#test-result").className = "result bad";
    return false;
  } finally { busy(false); }
}

async function submit(event) {
  event.preventDefault();
  if (!valid()) { toast("warning", "Please fix the highlighted fields."); return; }
  busy(true);
  for (const id of serverChecked) { $(`#${id}-error`).textContent = ""; $(`#${id}`).setAttribute("aria-invalid", "false"); }
  try {
    const result = await api("/admin/register", { method: "POST", body: body() });
    $("#registration-id").textContent = result.registration_id;
    $("#registered-link").href = `/servers/${result.registration_id}`;
    $("#registered").hidden = false;
    $("#register-form").reset();
    $("#test-result").textContent = "";
    toast("success", `Registered (${result.health_status}).`);
  } catch (error) {
    toast("error", error.message);
    showFieldError(error);  // the gateway's own verdict, under the field it names
    $("#test-result").textContent = `Registration failed: ${error.message}`;
    $("#test-result").className = "result bad";
  } finally { busy(false); }
}

export function start() {
  for (const id of checked) $(`#${id}`).addEventListener("input", () => check(id));
  $("#test-connection").addEventListener("click", testConnection);
  $("#register-form").addEventListener("submit", submit);
  $("#copy-id").addEventListener("click", async () => {
    await navigator.clipboard.writeText($("#registration-id").textContent);
    toast("info", "Registration ID copied.");
  });
  $("#register-another").addEventListener("click", () => { $("#registered").hidden = true; $("#model_name").focus(); });
}
