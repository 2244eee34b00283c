"""Realistic synthetic events (demo data, benchmarks): ~50 types, power-law customers, nested payloads."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

DOMAINS = {
    "customer": ["created", "updated", "deactivated", "reactivated", "merged", "email.changed", "address.changed"],
    "billing": ["charged", "failed", "refund.issued", "invoice.created", "invoice.paid", "invoice.voided",
                "subscription.started", "subscription.cancelled", "plan.changed", "card.updated"],
    "auth": ["login.succeeded", "login.failed", "password.changed", "mfa.enabled", "mfa.disabled", "token.issued",
             "session.revoked"],
    "shipping": ["order.packed", "order.shipped", "order.delivered", "order.returned", "label.printed"],
    "support": ["ticket.opened", "ticket.closed", "ticket.escalated", "note.added"],
    "admin": ["user.impersonated", "role.granted", "role.revoked", "export.requested", "setting.changed"],
    "catalog": ["product.created", "product.updated", "price.changed", "stock.adjusted"],
    "notify": ["email.sent", "email.bounced", "sms.sent", "push.sent"],
}  # fmt: skip
TYPES = [f"{domain}.{verb}" for domain, verbs in DOMAINS.items() for verb in verbs]
WORDS = [
    "invoice",
    "payment",
    "refund",
    "card",
    "address",
    "plan",
    "upgrade",
    "downgrade",
    "password",
    "login",
    "order",
    "parcel",
    "ticket",
    "escalation",
    "price",
    "stock",
    "email",
    "bounce",
    "session",
    "token",
    "role",
    "export",
    "coupon",
    "trial",
    "renewal",
]
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")
PLANS = ("free", "starter", "pro", "team", "enterprise")
END = datetime(2026, 11, 1, tzinfo=UTC)
SPAN_SECONDS = 365 * 24 * 3600


class Corpus:
    """Deterministic (seeded) event dicts in the ingest body's shape."""

    def __init__(self, *, customers: int = 100_000, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.customers = customers
        # Type popularity is skewed too: a few types make most of the traffic.
        self.type_weights = [1 / (rank + 1) ** 0.8 for rank in range(len(TYPES))]

    def customer(self) -> str:
        # Pareto: a few customers have very long timelines, most have a handful of events.
        index = int(self.rng.paretovariate(1.16)) - 1
        return f"cus_{index % self.customers:06d}"

    def event(self, *, with_time: bool = True) -> dict[str, Any]:
        rng = self.rng
        type_name = rng.choices(TYPES, self.type_weights)[0]
        event: dict[str, Any] = {
            "type": type_name,
            "customer": self.customer() if rng.random() < 0.92 else None,
            "actor": rng.choice(
                ("system", "scheduler", f"user_{rng.randrange(5000)}", f"staff{rng.randrange(40)}@example.com")
            ),
            "description": " ".join(rng.sample(WORDS, 4)),
            "payload": {
                "plan": rng.choice(PLANS),
                "amount": round(rng.uniform(1, 500), 2),
                "invoice": {"id": f"in_{rng.randrange(10**9):09d}", "currency": rng.choice(CURRENCIES),
                            "lines": [{"sku": f"sku_{rng.randrange(300)}", "qty": rng.randrange(1, 4)}
                                      for _ in range(rng.randrange(1, 3))]},
                "request": {"ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                            "user_agent": "billing-service/4.2"},
            },
        }  # fmt: skip
        if with_time:
            occurred = END - timedelta(seconds=rng.randrange(SPAN_SECONDS), microseconds=rng.randrange(10**6))
            event["occurred_at"] = occurred.isoformat()
        return event

    def events(self, count: int, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for _ in range(count):
            yield self.event(**kwargs)


def payload_schema() -> dict[str, Any]:
    """A realistic schema of the demo payloads (bench.ingest measures enforce mode with it; it marks
    nothing personal, so that it measures validation alone: bench.cloudevents_privacy adds marks)."""
    return {
        "type": "object",
        "required": ["plan", "amount", "invoice"],
        "properties": {
            "plan": {"type": "string", "enum": list(PLANS)},
            "amount": {"type": "number", "minimum": 0, "description": "in the invoice's currency"},
            "invoice": {
                "type": "object",
                "required": ["id", "currency", "lines"],
                "properties": {
                    "id": {"type": "string", "pattern": "^in_[0-9]{9}$"},
                    "currency": {"type": "string", "enum": list(CURRENCIES)},
                    "lines": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["sku", "qty"],
                            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                        },
                    },
                },
            },
            "request": {
                "type": "object",
                "properties": {"ip": {"type": "string"}, "user_agent": {"type": "string"}},
            },
        },
    }
