"""Every route of the keys and groups admin API, for app.py's /admin mount."""

from __future__ import annotations

from gateway.openapi import DocumentedRoute
from gateway.people.api import key_routes
from gateway.people.groups import group_routes


def people_routes() -> list[DocumentedRoute]:
    return [*key_routes(), *group_routes()]
