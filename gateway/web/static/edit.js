import { adminKey, api, managementToken, showFieldError, toast } from "/static/app.js";

const $ = (s) => document.querySelector(s);
const form = () => $("#edit-form");
let original = {};
const own = (id) => (adminKey() ? "" : managementToken(id));  // a host editing its own server

const read = (input) => input.type === "checkbox" ? input.checked : input.value.trim();

function flatten(s) {
  return {
    model_name: s.model_name ?? "", backend_model: s.backend_model ?? "",
    endpoint_url: s.endpoint_url, api_key: "",
    max_tokens: s.capabilities.max_tokens ?? "", context_length: s.capabilities.context_length ?? "",
    streaming: s.capabilities.streaming, student_id: s.metadata.student_id ?? "",
    description: s.metadata.description ?? "", tags: s.tags.join(", "), priority: s.priority,
    weight: s.weight, max_concurrent: s.max_concurrent ?? "",
    notify_url: s.notify_url ?? "", notify_format: s.notify_format,
    claim: Boolean(s.model_name && s.owned_models.includes(s.model_name)),
  };
}

function changed() {
  const result = {};
  for (const input of form().querySelectorAll("[data-field]")) {
    const field = input.dataset.field;
    const value = read(input);
    const differs = String(value) !== String(original[field]);
    input.closest(".field").classList.toggle("changed", differs);
    if (differs) result[field] = value;
  }
  return result;
}

function body(changes) {
  const number = (v) => (v === "" ? null : Number(v));
  const out = {};
  const capabilities = {}, metadata = {};
  for (const [field, value] of Object.entries(changes)) {
    if (["max_tokens", "context_length"].includes(field)) capabilities[field] = number(value);
    else if (field === "streaming") capabilities.streaming = value;
    else if (["student_id", "description"].includes(field)) metadata[field] = value || null;
    else if (["model_name", "backend_model", "notify_url"].includes(field)) out[field] = value || null;
    else if (field === "claim") continue;  // its own call: claimName()
    else if (field === "tags") out.tags = value ? value.split(",").map((t) => t.trim()).filter(Boolean) : [];
    else if (["priority", "weight", "max_concurrent"].includes(field)) out[field] = number(value);
    else out[field] = value;
  }
  if (Object.keys(capabilities).length) out.capabilities = capabilities;
  if (Object.keys(metadata).length) out.metadata = metadata;
  return out;
}

/** Own the server's model name, or open it again (POST /admin/models/{name}/claim, /open). */
async function claimName(id, owned) {
  const name = read($("#e-model_name"));
  try {
    if (!name) throw new Error("Owning a name needs a model name: the name to own.");
    const body = adminKey() ? { registration_id: id } : undefined;
    await api(`/admin/models/${encodeURIComponent(name)}/${owned ? "claim" : "open"}`, { method: "POST", body, token: own(id) });
  } catch (error) {
    error.claim = true;  // shown under the claim box, whatever field the gateway named
    throw error;
  }
}

export async function start() {
  const id = form().dataset.id;
  try {
    original = flatten(await api(`/admin/servers/${encodeURIComponent(id)}`, { token: own(id) }));
  } catch (error) { toast("error", error.message); return; }
  for (const input of form().querySelectorAll("[data-field]")) {
    const value = original[input.dataset.field];
    if (input.type === "checkbox") input.checked = Boolean(value); else input.value = value;
    input.addEventListener("input", changed);
  }
  form().addEventListener("submit", async (event) => {
    event.preventDefault();
    const changes = changed();
    const names = Object.keys(changes);
    if (!names.length) { toast("info", "Nothing has changed."); return; }
    if (!confirm(`Save changes to: ${names.join(", ")}?`)) return;
    $("#edit-busy").hidden = false;
    $("#edit-save").disabled = true;
    for (const place of form().querySelectorAll(".error")) place.textContent = "";
    try {
      const update = body(changes);
      if (Object.keys(update).length) {
        await api(`/admin/register/${encodeURIComponent(id)}`, { method: "PUT", body: update, token: own(id) });
        original = { ...original, ...changes, claim: original.claim };
      }
      if ("claim" in changes) await claimName(id, changes.claim);
      toast("success", "Saved.");
      setTimeout(() => { location.href = `/servers/${encodeURIComponent(id)}`; }, 600);
    } catch (error) {
      toast("error", error.message);
      showFieldError(error, "e-", error.claim ? "claim" : "");
    }
    finally { $("#edit-busy").hidden = true; $("#edit-save").disabled = false; }
  });
}
