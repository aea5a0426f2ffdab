"""The counters' named semaphores of the stores these tests make on their folders are
removed with them (an app's own, and a gateway's, remove theirs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.admission.shared_counters import remove_lock


@pytest.fixture(autouse=True)
def _locks_removed(tmp_path: Path) -> Iterator[None]:
    yield
    for folder in [tmp_path, *(path for path in tmp_path.rglob("*") if path.is_dir())]:
        remove_lock(folder)
