"""The limits a host (a registration key or a management token) works within: the
admin sets them, and may do anything.

A host's weight is at most HOST_MAX_WEIGHT, and the first ADMIN_PRIORITY_TIERS
priority tiers are the admin's: a host that could give its server weight 1000,
or the tier tried first, would draw a pool's traffic (and its prompts) to
itself. A host that does not say its priority gets the best tier it may use.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import PermissionDenied


@dataclass(frozen=True)
class HostLimits:
    max_weight: int
    admin_tiers: int  # tiers 0 .. admin_tiers-1 are the admin's

    def check(self, *, weight: int | None, priority: int | None) -> None:
        """Refuse (403) a weight or priority beyond the host's limits; None: not sent."""
        if weight is not None and weight > self.max_weight:
            raise PermissionDenied(
                f"weight {weight} is above the hosts' limit of {self.max_weight} "
                "(HOST_MAX_WEIGHT); ask the admin for more",
                param="weight",
            )
        if priority is not None and priority < self.admin_tiers:
            raise PermissionDenied(
                f"priority tiers 0 to {self.admin_tiers - 1} are the admin's "
                f"(ADMIN_PRIORITY_TIERS); use {self.admin_tiers} or above",
                param="priority",
            )

    def default_priority(self, requested: int | None) -> int | None:
        """The priority to store when a host sent none: the best tier it may use."""
        if requested is None and self.admin_tiers:
            return self.admin_tiers
        return requested
