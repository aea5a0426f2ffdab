"""Owned model names, the database side (blocking; called inside the admin API's
transactions, so a check and the write it guards are one).

- A host claims a name at registration (`"claim": true`) or later; a name others
  serve now is not a host's to take (their traffic would become its traffic:
  the very capture claims exist to prevent), only the admin's.
- With OPEN_MODEL_NAMES=false the first registrant of a name owns it.
- Another owner's registration that names a claimed model is refused (403,
  naming the owner and how to ask); one that merely lists it does not serve it.
- The owner (or the admin) adds and removes co-hosts, and opens the name again.
  The admin may do anything: a server the admin registers under a claimed name
  becomes a co-host of it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.routing.claims import Claim, claim_of, may_serve
from shared.errors import Conflict, NotFound, PermissionDenied
from shared.models import ModelClaim, ModelServer, utcnow


def _row(session: Session, model: str) -> ModelClaim | None:
    return session.get(ModelClaim, model)


def current_claim(session: Session, model: str) -> Claim | None:
    row = _row(session, model)
    return None if row is None else claim_of(row)


def servers_of(session: Session, model: str) -> list[ModelServer]:
    """The active registrations that offer `model` (named, or listed)."""
    rows = session.scalars(
        select(ModelServer).where(
            ModelServer.is_active.is_(True),
            (ModelServer.model_name == model) | ModelServer.model_name.is_(None),
        )
    ).all()
    return [row for row in rows if any(name == model for name, _ in row.served_models())]


def refuse_claimed(claim: Claim) -> PermissionDenied:
    return PermissionDenied(
        f"model {claim.model!r} is claimed by {claim.owner}: ask its owner to add your "
        f"server as a co-host (POST /admin/models/{claim.model}/cohosts with its token), "
        "or the admin to open the name; or register under another name",
        param="model_name",
    )


def check_named(session: Session, model: str | None, server: ModelServer, admin: bool) -> None:
    """A registration that names `model` (registered, updated or re-attached): refused
    if someone else owns it; the admin's becomes a co-host."""
    if model is None:
        return
    row = _row(session, model)
    if row is None or may_serve(claim_of(row), server.id):
        return
    if not admin:
        raise refuse_claimed(claim_of(row))
    row.co_hosts = sorted({*row.co_hosts, server.id})


def claim(session: Session, model: str, owner: ModelServer | None, *, admin: bool) -> Claim:
    """`owner` claims `model` (None: the admin, for itself). Claiming one's own name
    again changes nothing."""
    row = _row(session, model)
    owner_id = None if owner is None else owner.id
    if row is not None:
        if row.owner_id == owner_id:
            return claim_of(row)
        if not admin:
            raise PermissionDenied(
                f"model {model!r} is claimed by {claim_of(row).owner} already; ask its owner "
                "to add your server as a co-host, or the admin",
                param="model",
            )
        row.owner_id = owner_id
        row.owner_label = None if owner is None else owner.student_id
        row.co_hosts = [host for host in row.co_hosts if host != owner_id]
        return claim_of(row)
    others = [server for server in servers_of(session, model) if server.id != owner_id]
    if others and not admin:
        raise Conflict(
            f"{len(others)} other server(s) serve model {model!r} now: claiming it would "
            "take their traffic. Register under a name of your own, or ask the admin"
        )
    row = ModelClaim(
        model_name=model,
        owner_id=owner_id,
        owner_label=None if owner is None else owner.student_id,
        co_hosts=[],
        claimed_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return claim_of(row)


def claim_if_first(session: Session, model: str, owner: ModelServer) -> None:
    """OPEN_MODEL_NAMES=false: the first registrant of a name owns it."""
    if _row(session, model) is None and not [
        server for server in servers_of(session, model) if server.id != owner.id
    ]:
        claim(session, model, owner, admin=False)


def _owned(session: Session, model: str, by: str | None, admin: bool) -> ModelClaim:
    """The claim on `model`, if `by` (a registration id; the admin: any) owns it."""
    row = _row(session, model)
    if row is None:
        raise NotFound(f"model {model!r} is not claimed: it is open to every server")
    if not admin and row.owner_id != by:
        raise PermissionDenied(
            f"model {model!r} is claimed by {claim_of(row).owner}, not by this registration"
        )
    return row


def open_name(session: Session, model: str, by: str | None, *, admin: bool) -> None:
    """The owner (or the admin) opens the name to every server again."""
    session.delete(_owned(session, model, by, admin))


def set_co_host(
    session: Session, model: str, co_host: str, by: str | None, *, admin: bool, allowed: bool
) -> Claim:
    """Add (`allowed`) or remove a co-host of an owned name."""
    row = _owned(session, model, by, admin)
    if allowed:
        server = session.get(ModelServer, co_host)
        if server is None or not server.is_active:
            raise NotFound(f"no active registration with id {co_host!r}")
        row.co_hosts = sorted({*row.co_hosts, co_host})
    else:
        row.co_hosts = [host for host in row.co_hosts if host != co_host]
    session.flush()
    return claim_of(row)
