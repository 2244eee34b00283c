"""Identity references as people and services write them: `system:id`, e.g. `stripe:cus_42`."""

from __future__ import annotations


def parse_identity(reference: str) -> tuple[str, str] | None:
    """(system, external id) of `system:id`; None when either side is empty."""
    system, _, external_id = reference.partition(":")
    if not system or not external_id:
        return None
    return system, external_id
