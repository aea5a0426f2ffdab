"""A setting's name mistyped in `.env` or the environment: found, so it is not ignored.

Pure: the names come from the caller (shared/settings.py's `load_settings`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

# Names of ours that are not settings: the CLI's, and prometheus_client's folder.
OTHER_NAMES = frozenset({"GATEWAY_URL", "GATEWAY_MANAGEMENT_TOKEN", "PROMETHEUS_MULTIPROC_DIR"})
DOTENV_CUTOFF = 0.8  # difflib's ratio above which a `.env` key is taken for a typo
ENVIRONMENT_CUTOFF = 0.85


def _three_words(name: str) -> bool:
    return name.count("_") >= 2


def look_alike(name: str, known: Sequence[str], cutoff: float) -> str | None:
    """The setting an unknown `name` is probably a typo of (None: known, or like none)."""
    upper = name.upper()
    if upper in known or upper in OTHER_NAMES:
        return None
    matches = difflib.get_close_matches(upper, known, n=1, cutoff=cutoff)
    return matches[0] if matches else None


def misspelt_settings(
    dotenv_keys: Iterable[str], environment: Iterable[str], known: Sequence[str]
) -> list[str]:
    """One line per name that looks like a typo of a setting, which would be ignored.

    Every key of `.env` is ours to judge. The environment is everybody's, so a
    variable counts only when both it and the setting it resembles have three
    words or more (`REQURE_CLIENT_AUTH`), never short ones other programs use
    (`LOGLEVEL`, `DATABASE_URI`, `WORKER`)."""
    lines = []
    for key in dotenv_keys:
        match = look_alike(key, known, DOTENV_CUTOFF)
        if match:
            lines.append(f"unknown setting {key} in .env; did you mean {match}?")
    long_names = [name for name in known if _three_words(name)]
    for key in environment:
        match = look_alike(key, long_names, ENVIRONMENT_CUTOFF) if _three_words(key) else None
        if match:
            lines.append(f"unknown setting {key} in the environment; did you mean {match}?")
    return lines
