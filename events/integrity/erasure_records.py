"""Whether every erased data key is accounted for by an erasure in the log, and every other key
is there and opens.

The service's database role can null a customer's wrapped key by hand, which destroys that
customer's personal data as erase_customer does, but leaves no record. Every erased key must be
named by a stored auditsvc.customer.erased event of the service's own source (its payload lists
data_key_ids; one recorded before that field existed covers the customer's keys erased up to it).
It can also overwrite a live key's wrapped bytes (its values then read as unreadable, and its
customer's writes are refused): unreadable_keys. It cannot delete a key row (database_roles),
but the owner can: missing_keys names the key ids stored ciphertexts need and no row has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.db.models import Q

from events.data_keys import unwraps
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


@dataclass(frozen=True)
class UnreadableKey:
    customer: str
    key_id: int


def unreadable_keys(limit: int) -> list[UnreadableKey]:
    """Live data keys whose wrapped bytes do not unwrap under the master key, at most limit; none
    when this process has no master key to try (AUDITSVC_DATA_KEY unset in production)."""
    live = CustomerDataKey.objects.filter(erased_at__isnull=True, wrapped__isnull=False).order_by("id")
    found = []
    try:
        for key_id, customer, wrapped in live.values_list("id", "customer", "wrapped").iterator(chunk_size=2000):
            if wrapped is not None and not unwraps(bytes(wrapped), customer):
                found.append(UnreadableKey(customer, key_id))
                if len(found) == limit:
                    break
    except ImproperlyConfigured:
        return []
    return found


@dataclass(frozen=True)
class MissingKey:
    key_id: int
    events: int  # how many stored events hold a ciphertext under it
    example: str  # one of them, by id


# The data key id that follows a ciphertext's prefix in a payload's JSON text (events.protection
# writes "aes-gcm:v2:<id>:..."; v1 of before is still read). The ORM has no regexp over a JSONB's
# text; the LIKE lets PostgreSQL skip the regexp for the payloads (most) that hold no ciphertext.
_MISSING_KEYS = """
    SELECT found.key_id, count(DISTINCT found.event_id), min(found.event_id::text)
    FROM (SELECT e.id AS event_id, (m)[1]::numeric AS key_id
          FROM events_event e, regexp_matches(e.payload::text, '"aes-gcm:v[12]:([0-9]+):', 'g') AS m
          WHERE e.payload::text LIKE '%%"aes-gcm:v%%') AS found
    WHERE NOT EXISTS (SELECT 1 FROM events_customerdatakey k WHERE k.id::numeric = found.key_id)
    GROUP BY found.key_id ORDER BY found.key_id LIMIT %s
"""


def missing_keys(limit: int) -> list[MissingKey]:
    """Key ids that stored ciphertexts name and no events_customerdatakey row has (a deleted key
    row: its values destroyed with no erasure to say so), at most limit. One pass over the events."""
    with connection.cursor() as cursor:
        cursor.execute(_MISSING_KEYS, [limit])
        return [MissingKey(int(key_id), count, example) for key_id, count, example in cursor.fetchall()]
