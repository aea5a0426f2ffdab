"""The APIs the gateway forwards, routed by `model`: one table, so adding one is a line.

Each is forwarded under its own path to a backend of the model that has it
(a backend that answers 404 or 405 is remembered as lacking that path, and
the request goes to another: gateway/routing/capabilities.py), with the same
failover, streaming, timeout and accounting rules as chat. The paths are the
ones the servers in the pool serve them at: vLLM's tokenizer and rerank
routes sit at the root as well as under /v1, Ollama's API under /api.
"""

from __future__ import annotations

from dataclasses import dataclass

RESPONSES_PATH = "/v1/responses"


@dataclass(frozen=True)
class ForwardedAPI:
    path: str  # as clients call it, and as it is sent to the backend
    summary: str
    form: bool = False  # a multipart/form-data upload (the model is a form field)
    streams_by_default: bool = False  # Ollama's chat and generate stream unless told not to
    # Its API refuses NaN, Infinity and a number no double holds (Ollama's Go decoder,
    # Anthropic's), and the gateway may write its body again (a translation): such a
    # body is refused at once. The OpenAI routes pass it on byte for byte, as sent.
    strict_numbers: bool = False

    @property
    def mount(self) -> str:
        """The app's mount the route sits in: /v1, or the root."""
        return "/v1" if self.path.startswith("/v1/") else ""


FORWARDED_APIS = (
    ForwardedAPI("/v1/chat/completions", "Chat completion (OpenAI-compatible)"),
    ForwardedAPI("/v1/completions", "Text completion (OpenAI-compatible)"),
    ForwardedAPI("/v1/embeddings", "Embeddings (OpenAI-compatible)"),
    ForwardedAPI(
        RESPONSES_PATH,
        "Responses API (OpenAI); a previous_response_id goes to the backend that made it",
    ),
    ForwardedAPI(
        "/v1/messages",
        "Messages (Anthropic's API); translated to chat for a backend without it",
        strict_numbers=True,
    ),
    ForwardedAPI(
        "/v1/messages/count_tokens",
        "Count a Messages request's tokens (Anthropic's API); through /tokenize if need be",
        strict_numbers=True,
    ),
    ForwardedAPI("/v1/rerank", "Rerank documents (Jina/Cohere-style, as vLLM serves it)"),
    ForwardedAPI("/rerank", "Rerank documents (vLLM's root path)"),
    ForwardedAPI("/v2/rerank", "Rerank documents (Cohere v2 path)"),
    ForwardedAPI("/v1/score", "Score text pairs (vLLM)"),
    ForwardedAPI("/score", "Score text pairs (vLLM's root path)"),
    ForwardedAPI("/tokenize", "Tokenize (vLLM)"),
    ForwardedAPI("/detokenize", "Detokenize (vLLM)"),
    ForwardedAPI("/v1/audio/transcriptions", "Transcribe audio (OpenAI)", form=True),
    ForwardedAPI("/v1/audio/translations", "Translate audio into English (OpenAI)", form=True),
    ForwardedAPI("/v1/audio/speech", "Text to speech (OpenAI)"),
    ForwardedAPI("/v1/images/generations", "Generate images (OpenAI)"),
    # Ollama's own API (Open WebUI, the ollama client): NDJSON streams, line by line.
    # Translated to the OpenAI API for a backend without them (gateway/proxy/translated.py).
    ForwardedAPI("/api/chat", "Chat (Ollama's API)", streams_by_default=True, strict_numbers=True),
    ForwardedAPI(
        "/api/generate", "Generate (Ollama's API)", streams_by_default=True, strict_numbers=True
    ),
    ForwardedAPI("/api/embed", "Embeddings (Ollama's API)", strict_numbers=True),
    ForwardedAPI("/api/embeddings", "Embeddings (Ollama's older API)", strict_numbers=True),
    ForwardedAPI("/api/show", "Model details (Ollama's API)", strict_numbers=True),
)
