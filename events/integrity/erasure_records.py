"""Whether every erased data key is accounted for by an erasure in the log.

The service's database role can null a customer's wrapped key by hand, which destroys that
customer's personal data as erase_customer does, but leaves no record. Every erased key must be
named by a stored auditsvc.customer.erased event of the service's own source (its payload lists
data_key_ids; one recorded before that field existed covers the customer's keys erased up to it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Q

from events.models import SERVICE_SOURCE, CustomerDataKey, Event

ERASED_TYPE = "auditsvc.customer.erased"


@dataclass(frozen=True)
class UnrecordedErasure:
    customer: str
    key_id: int
    erased_at: datetime | None


def unrecorded_erasures(limit: int) -> list[UnrecordedErasure]:
    """Erased data keys (erased_at set, or the wrapped key gone) that no erasure event covers,
    oldest first, at most limit. Erasures are rare: both lists are read whole."""
    records = Event.objects.filter(type__name=ERASED_TYPE, source__slug=SERVICE_SOURCE)
    named: set[int] = set()
    latest_unnamed: dict[str, datetime] = {}  # customer → its latest erasure without key ids
    for customer, received_at, payload in records.values_list("customer__external_id", "received_at", "payload"):
        key_ids = payload.get("data_key_ids") if isinstance(payload, dict) else None
        if isinstance(key_ids, list):
            named.update(k for k in key_ids if isinstance(k, int))
        elif customer:
            latest_unnamed[customer] = max(received_at, latest_unnamed.get(customer, received_at))
    erased = CustomerDataKey.objects.filter(Q(erased_at__isnull=False) | Q(wrapped__isnull=True))
    found = []
    for key_id, customer, erased_at in erased.order_by("erased_at", "id").values_list("id", "customer", "erased_at"):
        covered_until = latest_unnamed.get(customer)
        if key_id in named or (covered_until is not None and erased_at is not None and erased_at <= covered_until):
            continue
        found.append(UnrecordedErasure(customer, key_id, erased_at))
        if len(found) == limit:
            break
    return found
