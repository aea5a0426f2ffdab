"""Anthropic's Messages request (`/v1/messages`) as an OpenAI chat completion.

The system prompt becomes the first message; content blocks become OpenAI's
parts (text, images as data or URLs); `tool_use` blocks become the assistant's
`tool_calls`, `tool_result` blocks the `tool` messages that answer them (OpenAI
wants them before the user's other words of that turn). A block OpenAI's API
cannot carry (a document, a server tool) is a 400 naming it; what changes
nothing the model is asked to say (`cache_control`, `metadata`) or that a chat
completion has no word for (`top_k`, `thinking`) is dropped and named.
"""

from __future__ import annotations

from gateway.translate.common import (
    Dropped,
    JSONObject,
    Translated,
    Untranslatable,
    as_object,
    as_text,
    compact,
)

CHAT = "/v1/chat/completions"
TOKENIZE = "/tokenize"

# The fields translated: any other (top_k, thinking, service_tier, a beta's such as
# context_management) is dropped and named, never passed over in silence.
_TRANSLATED = frozenset(
    (
        "model",
        "messages",
        "system",
        "max_tokens",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
    )
)
# The numbers a Messages request holds, as Anthropic's API checks them (its 400 names
# the field): (integer?, least, most). A whole float is an integer, as its validator
# reads 16.0. Checked here too, so that a chat completion never gets "hot" for a
# temperature, which a backend might take or refuse in its own words.
_NUMBERS: dict[str, tuple[bool, float, float | None]] = {
    "max_tokens": (True, 1, None),
    "temperature": (False, 0, 1),
    "top_p": (False, 0, 1),
    "top_k": (True, 0, None),
}


def checked_number(name: str, value: object) -> int | float:
    """A number field's value as Anthropic's API takes it, or its 400 naming the field."""
    integer, least, most = _NUMBERS[name]
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untranslatable(name, f"must be {kind}")
    if integer and isinstance(value, float):
        if not value.is_integer():
            raise Untranslatable(name, f"must be {kind}")
        value = int(value)
    if not least <= value or (most is not None and not value <= most):
        bounds = f"at least {least:g}" if most is None else f"from {least:g} to {most:g}"
        raise Untranslatable(name, f"must be {kind} {bounds}")
    return value


def _text_of(blocks: object, where: str, dropped: Dropped) -> str:
    """Text that may be a string or a list of text blocks (a system prompt, a tool result)."""
    if isinstance(blocks, str):
        return blocks
    if blocks is None:
        return ""
    if not isinstance(blocks, list):
        raise Untranslatable(where, "must be text or a list of text blocks")
    texts = []
    for index, block in enumerate(blocks):
        block = as_object(block)
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise Untranslatable(f"{where}[{index}]", "only text blocks can be translated here")
        if "cache_control" in block:
            dropped.add("cache_control")
        texts.append(block["text"])
    return "\n\n".join(texts)


def _image(block: JSONObject, where: str) -> JSONObject:
    source = as_object(block.get("source"))
    if source.get("type") == "base64":
        media = as_text(source.get("media_type")) or "image/png"
        url = f"data:{media};base64,{as_text(source.get('data'))}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise Untranslatable(f"{where}.source.type", "must be base64 or url")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: JSONObject, where: str, dropped: Dropped) -> JSONObject:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str):
        raise Untranslatable(f"{where}.tool_use_id", "is missing")
    content = block.get("content")
    if isinstance(content, list) and any(as_object(part).get("type") != "text" for part in content):
        raise Untranslatable(f"{where}.content", "only text can be a tool's result here")
    text = _text_of(content, f"{where}.content", dropped)
    if block.get("is_error") is True:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _turn(message: object, index: int, dropped: Dropped) -> list[JSONObject]:
    """One Anthropic message as one or more OpenAI messages."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise Untranslatable(where, "must be an object")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise Untranslatable(f"{where}.role", "must be user or assistant")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise Untranslatable(f"{where}.content", "must be text or a list of blocks")
    parts: list[JSONObject] = []
    results: list[JSONObject] = []
    calls: list[JSONObject] = []
    for number, block in enumerate(content):
        at = f"{where}.content[{number}]"
        block = as_object(block)
        kind = block.get("type")
        if "cache_control" in block:
            dropped.add("cache_control")
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise Untranslatable(f"{at}.text", "must be text")
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image" and role == "user":
            parts.append(_image(block, at))
        elif kind == "tool_result" and role == "user":
            results.append(_tool_result(block, at, dropped))
        elif kind == "tool_use" and role == "assistant":
            name, call_id = block.get("name"), block.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise Untranslatable(at, "a tool_use needs an id and a name")
            arguments = compact(block.get("input") if block.get("input") is not None else {})
            calls.append(
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            dropped.add(f"{where}.content.{kind}")
        else:
            raise Untranslatable(f"{at}.type", f"a {kind!r} block has no chat-completion form")
    out: list[JSONObject] = list(results)
    if role == "assistant":
        parts = [part for part in parts if part["text"]]
        if parts or calls:
            turn: JSONObject = {"role": "assistant", "content": _content(parts) or None}
            if calls:
                turn["tool_calls"] = calls
            out.append(turn)
    elif parts:
        out.append({"role": "user", "content": _content(parts)})
    return out


def _content(parts: list[JSONObject]) -> str | list[JSONObject]:
    """A message's blocks as OpenAI's content: one text block is its text; more blocks
    stay parts, joined as the backend's chat template joins them (not run together)."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _tools(value: object, dropped: Dropped) -> list[JSONObject]:
    if not isinstance(value, list):
        raise Untranslatable("tools", "must be a list")
    tools = []
    for index, tool in enumerate(value):
        tool = as_object(tool)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise Untranslatable(f"tools[{index}].type", f"the server tool {kind!r} is Anthropic's")
        if not isinstance(tool.get("name"), str):
            raise Untranslatable(f"tools[{index}].name", "is missing")
        if "cache_control" in tool:
            dropped.add("cache_control")
        function: JSONObject = {
            "name": tool["name"],
            "parameters": as_object(tool.get("input_schema")) or {"type": "object"},
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: object, out: JSONObject) -> None:
    choice = as_object(value)
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise Untranslatable("tool_choice.type", "must be auto, any, tool (with a name) or none")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _messages(document: JSONObject, dropped: Dropped) -> list[JSONObject]:
    messages = document.get("messages")
    if not isinstance(messages, list):
        raise Untranslatable("messages", "must be a list")
    if not messages:
        raise Untranslatable("messages", "at least one message is required")
    out: list[JSONObject] = []
    system = document.get("system")
    if system is not None:
        text = _text_of(system, "system", dropped)
        if text:
            out.append({"role": "system", "content": text})
    for index, message in enumerate(messages):
        out.extend(_turn(message, index, dropped))
    return out


def messages(document: JSONObject) -> Translated:
    """A Messages request as a chat completion request."""
    dropped = Dropped()
    out: JSONObject = {"model": document.get("model"), "messages": _messages(document, dropped)}
    if document.get("max_tokens") is None:
        raise Untranslatable("max_tokens", "is required")
    for name, (integer, least, most) in _NUMBERS.items():
        value = document.get(name)
        if value is None:
            continue
        # (the usual value, told at once; anything else is checked in full)
        if not (type(value) is (int if integer else float) and least <= value <= (most or value)):
            value = checked_number(name, value)
        if name != "top_k":  # (a chat completion has none: dropped and named below)
            out[name] = value
    stops = document.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise Untranslatable("stop_sequences", "must be a list of texts")
        out["stop"] = stops
    stream = document.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise Untranslatable("stream", "must be true or false")
    out["stream"] = stream is True
    if document.get("tools"):
        out["tools"] = _tools(document["tools"], dropped)
    if document.get("tool_choice") is not None:
        _tool_choice(document["tool_choice"], out)
    user = as_object(document.get("metadata")).get("user_id")
    if isinstance(user, str):
        out["user"] = user
    _drop_the_rest(document, _TRANSLATED, dropped)
    return Translated(CHAT, out, out["stream"], tuple(dropped.names))


def _drop_the_rest(document: JSONObject, translated: frozenset[str], dropped: Dropped) -> None:
    """Names the fields of `document` that were not translated."""
    for name in document:
        if name not in translated:
            dropped.add(name)


def count_tokens(document: JSONObject) -> Translated:
    """A count_tokens request as vLLM's /tokenize of the same chat (its template applied)."""
    dropped = Dropped()
    out: JSONObject = {
        "model": document.get("model"),
        "messages": _messages(document, dropped),
        "add_generation_prompt": True,
    }
    if document.get("tools"):
        out["tools"] = _tools(document["tools"], dropped)
    _drop_the_rest(document, _COUNTED, dropped)
    return Translated(TOKENIZE, out, False, tuple(dropped.names))


# What count_tokens reads of a request (what a chat's answer depends on is not counted).
_COUNTED = frozenset(("model", "messages", "system", "tools"))
