from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from events.demo import Corpus
from events.ingest.validation import parse_event
from events.ingest.write import ingest_events
from events.models import Source

SOURCES = {"billing": "Billing service", "auth": "Identity service", "shop": "Web shop", "support": "Helpdesk"}


class Command(BaseCommand):
    help = "Load a realistic demo data set (several sources, customers with identities). Safe to re-run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--events", type=int, default=3000)
        parser.add_argument("--customers", type=int, default=300)

    def handle(self, *args: Any, events: int, customers: int, **options: Any) -> None:
        sources = [Source.objects.get_or_create(slug=s, defaults={"name": n})[0] for s, n in SOURCES.items()]
        corpus = Corpus(customers=customers, seed=20261124)
        created = 0
        for start in range(0, events, 500):
            raws = []
            for n in range(start, min(start + 500, events)):
                raw = corpus.event()
                raw["idempotency_key"] = f"demo-{n}"  # re-running stores nothing twice
                if n % 7 == 0 and raw.get("customer"):
                    raw["type"] = "customer.linked"
                    raw["customer_identities"] = [
                        {"system": "stripe", "id": f"cus_S{raw['customer'][4:]}"},
                        {"system": "crm", "id": f"C-{raw['customer'][4:]}"},
                    ]
                raws.append(raw)
            result = ingest_events(source=sources[(start // 500) % len(sources)], items=[parse_event(r) for r in raws])
            created += result.created
        self.stdout.write(
            f"Demo data: {created} new events ({events - created} already there) from {len(sources)} sources."
        )
