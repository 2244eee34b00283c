"""Erasure of one customer's personal data (manage.py erase_customer, docs/privacy.md)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from customers.models import Customer
from events.data_keys import forget_cached_data_keys
from events.ingest.stream import announce_generation
from events.models import CustomerDataKey, Event
from events.privacy_generation import bump
from events.service_events import store_service_event


@dataclass(frozen=True)
class Erasure:
    customer: str
    keys_destroyed: int
    events: int


def erase_customer(customer: str, *, actor: str) -> Erasure:
    """Destroy the customer's data keys and blank its stored contact fields, and record that as
    an auditsvc.customer.erased event, in one transaction; in force in every process once this
    returns (the privacy generation, announced to the stream's accept too)."""
    with transaction.atomic():
        # First, as in a registration: the writes in flight (which may hold the key being
        # destroyed) commit before this does, and the later ones protect with a new key.
        generation = bump()
        transaction.on_commit(lambda: announce_generation(generation))  # before the answer (a 503 if it fails)
        live = CustomerDataKey.objects.filter(customer=customer, erased_at__isnull=True)
        # The ids, in the record: verify_events matches each erased key to the erasure that
        # destroyed it (events.integrity.erasure_records). Locked, so none is made meanwhile.
        key_ids = sorted(live.select_for_update().values_list("id", flat=True))
        destroyed = CustomerDataKey.objects.filter(id__in=key_ids).update(wrapped=None, erased_at=timezone.now())
        Customer.objects.filter(external_id=customer).update(email="", display_name="")
        events = Event.objects.filter(customer__external_id=customer).count()
        store_service_event(
            type="auditsvc.customer.erased",
            actor=actor,
            customer=customer,
            description=f"{actor} erased the personal data of customer {customer}",
            payload={"data_keys_destroyed": destroyed, "data_key_ids": key_ids, "events": events},
        )
    forget_cached_data_keys()
    return Erasure(customer=customer, keys_destroyed=destroyed, events=events)
