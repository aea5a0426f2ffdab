"""Which backends lack which endpoint: learnt from their 404/405, forgotten after a while.

A chat model asked for embeddings, an Ollama server asked for /v1/rerank: the
backend is fine, it just does not offer that endpoint. Such a backend is not
unhealthy and not ejected; for LACKING_SECONDS it is tried for that endpoint
only when no backend of the model is left that might offer it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LACKING_SECONDS = 300.0


class EndpointMemory:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.until: dict[tuple[str, str], float] = {}  # (backend id, path) -> forget at

    def lacking(self, path: str) -> frozenset[str]:
        """The backends known to lack `path` now (none known: the usual, cheap answer)."""
        if not self.until:
            return frozenset()
        now = self.clock()
        for key, until in list(self.until.items()):
            if until <= now:
                del self.until[key]
        return frozenset(backend for backend, known in self.until if known == path)

    def remember(self, backend_id: str, path: str) -> None:
        self.until[(backend_id, path)] = self.clock() + LACKING_SECONDS
