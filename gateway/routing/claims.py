"""Owned model names: who may serve a claimed name, and why a server does not.

A name nobody claimed is open, as before: every server that offers it serves
it, so a class's many `llama3` servers pool together. A claimed name is served
only by its owner's registration and the co-hosts the owner allows: without
this a classmate could register a server under a name someone else serves and
receive that name's prompts. The rules are pure (tested as tables); the
routing snapshot, the admin API and the pages all ask them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import ModelClaim

ADMIN_OWNER = "the admin"


@dataclass(frozen=True)
class Claim:
    """One owned name: `owner_id` None is the admin's."""

    model: str
    owner_id: str | None
    owner_label: str | None
    co_hosts: frozenset[str] = frozenset()

    @property
    def owner(self) -> str:
        """The owner as the pages and errors name it."""
        if self.owner_id is None:
            return ADMIN_OWNER
        return self.owner_label or f"registration {self.owner_id[:8]}"


def may_serve(claim: Claim | None, registration_id: str) -> bool:
    """Whether a registration may serve a name: an open one, or as owner or co-host."""
    return claim is None or registration_id == claim.owner_id or registration_id in claim.co_hosts


def withheld_reason(claim: Claim) -> str:
    """Why a server that lists a claimed name does not serve it, and how to ask."""
    return (
        f"model {claim.model!r} is claimed by {claim.owner}; only its owner's server and "
        "the co-hosts it allows serve it. Ask its owner to add this server as a co-host "
        f"(POST /admin/models/{claim.model}/cohosts), or the admin to open the name"
    )


def claim_of(row: ModelClaim) -> Claim:
    return Claim(row.model_name, row.owner_id, row.owner_label, frozenset(row.co_hosts or ()))


def read_claims(session: Session) -> dict[str, Claim]:
    return {row.model_name: claim_of(row) for row in session.scalars(select(ModelClaim))}


def withheld(
    claims: Mapping[str, Claim], registration_id: str, models: list[str]
) -> dict[str, str]:
    """model → reason, for each of `models` this registration may not serve."""
    return {
        model: withheld_reason(claim)
        for model in models
        if (claim := claims.get(model)) is not None and not may_serve(claim, registration_id)
    }
