"""What translating Ollama's and Anthropic's APIs costs (#24: under 100 µs per request).

`python -m bench.translate` (pure.py): the pure functions alone, no I/O.
`python -m bench.translate.gateway` (gateway.py): a gateway's CPU per request,
translated against direct, end to end, over the backend of backend.py; both
on the typical chat of chat.py.
"""
