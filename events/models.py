from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models
from django.db.models.functions import Now

from events.ids import uuid7

SCOPE_INGEST = "ingest"
SCOPE_READ = "read"
# Reads limited to the key's own source's events (a service reading back its own log).
SCOPE_READ_OWN = "read:own"
SCOPE_SCHEMA = "schema"  # register event-type schemas (PUT /api/v1/event-types/{name}/schema)
SCOPES = (SCOPE_INGEST, SCOPE_READ, SCOPE_READ_OWN, SCOPE_SCHEMA)


SERVICE_SOURCE = "auditsvc"  # the log's own events: reads of it, admin changes, retention runs
# The service's record of one retirement: once sealed, the only thing that excuses a sealed
# event's absence from the table (events.integrity.retirements).
RETENTION_TYPE = "auditsvc.retention.applied"


class Source(models.Model):
    """A service that emits events; every API key belongs to exactly one."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return self.slug


class ApiKey(models.Model):
    """A source's credential. Only a keyed hash of the secret is stored; the prefix finds it."""

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="api_keys")
    name = models.CharField(max_length=200, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = ArrayField(models.CharField(max_length=16))
    created_at = models.DateTimeField(db_default=Now())
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(scopes__contained_by=list(SCOPES)) & models.Q(scopes__len__gte=1),
                name="api_key_scopes_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.prefix} ({self.source_id})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class EventType(models.Model):
    """A dotted event type name, registered on first sight unless the deployment is strict."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True, default="")
    first_seen_at = models.DateTimeField(db_default=Now())
    # Kept by events.ingest.write after each commit (not in the event transaction, so that no
    # ingest waits on a hot counter row); `manage.py rebuild_event_type_counts` recounts.
    event_count = models.BigIntegerField(default=0, db_default=0)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    # What ingest does with a payload against the type's latest schema (events.schemas): nothing,
    # store it and count a violation, or refuse it (400 schema_violation).
    validation = models.CharField(
        max_length=8, choices=[(m, m) for m in ("off", "warn", "enforce")], default="off", db_default="off"
    )
    schema_violations = models.BigIntegerField(default=0, db_default=0)  # stored in warn mode
    # The source whose `schema` keys register the type's schemas (schema_registry): the first that
    # sent it or registered a schema for it, or one staff name. Staff may register for any type.
    owner = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.PROTECT, related_name="owned_types",
        help_text="The source whose schema-scope keys may register this type's schemas.",
    )  # fmt: skip

    def __str__(self) -> str:
        return self.name


class EventSchema(models.Model):
    """One version of an event type's payload schema (JSON Schema draft 2020-12). Versions are
    never changed: a new one is registered, backward compatible with every earlier one unless
    forced (events.schemas)."""

    type = models.ForeignKey(EventType, on_delete=models.PROTECT, related_name="schemas")
    version = models.PositiveIntegerField()
    schema = models.JSONField()
    registered_at = models.DateTimeField(db_default=Now())
    registered_by = models.CharField(max_length=200)
    forced = models.BooleanField(default=False)  # registered despite incompatibilities

    class Meta:
        constraints = [models.UniqueConstraint(fields=["type", "version"], name="event_schema_version_unique")]
        ordering = ["type", "version"]

    def __str__(self) -> str:
        return f"{self.type} v{self.version}"


class Event(models.Model):
    """One audit event. Written only by events.ingest.write; never updated or deleted."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    # No single-column index on the foreign keys: the (key, occurred_at, id) indexes below lead
    # with each one and serve every lookup by it (docs/BENCHMARKS.md, "The write cost of indexes").
    type = models.ForeignKey(EventType, on_delete=models.PROTECT, related_name="events", db_index=False)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="events", db_index=False)
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="events", null=True, blank=True, db_index=False
    )
    actor = models.CharField(max_length=200, null=True, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    description = models.TextField(null=True, blank=True)
    payload = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    hash = models.CharField(max_length=64)
    # Where the sender says the event happened, beyond the key's source: a CloudEvents `source`
    # ("/billing/eu-1", "https://shop.example/orders"). Hashed when present; never the source.
    origin = models.CharField(
        max_length=500, null=True, blank=True, help_text="the CloudEvents source it was sent with (hashed)"
    )
    # The schema version the payload was checked against, and whether it passed (warn mode
    # stores a failure); null when the type had no schema or validation was off. Not hashed:
    # a finding about the event, not part of it (the append-only triggers keep it as stored).
    schema_version = models.PositiveIntegerField(null=True, blank=True)
    schema_valid = models.BooleanField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(hash__regex=r"^[0-9a-f]{64}$"), name="event_hash_is_sha256_hex"),
        ]
        indexes = [
            # Newest-first listing of everything (the default ordering; keyset on (occurred_at, id)).
            models.Index(fields=["-occurred_at", "-id"], name="event_occurred"),
            # A customer's timeline: WHERE customer_id = ? ORDER BY occurred_at DESC, id DESC.
            models.Index(fields=["customer", "-occurred_at", "-id"], name="event_customer_occurred"),
            # "every billing.failed this week": WHERE type_id = ? AND occurred_at range.
            models.Index(fields=["type", "-occurred_at", "-id"], name="event_type_occurred"),
            # "who did this?": WHERE actor = ? ORDER BY occurred_at DESC (API filter, admin search).
            models.Index(fields=["actor", "-occurred_at", "-id"], name="event_actor_occurred"),
            # One service's events over time: WHERE source_id = ? AND occurred_at range.
            models.Index(fields=["source", "-occurred_at", "-id"], name="event_source_occurred"),
            # ordering=received_at keyset pages: ORDER BY received_at DESC, id DESC.
            models.Index(fields=["-received_at", "-id"], name="event_received"),
            # q=: words of the description, to_tsvector('simple', ...) @@ websearch_to_tsquery(...).
            GinIndex(SearchVector("description", config="simple"), name="event_description_fts"),
            # received_at grows with insertion order, so a tiny BRIN serves seal/export ranges.
            BrinIndex(fields=["received_at"], name="event_received_brin"),
            # Payload containment (payload @> '{"plan": "pro"}').
            GinIndex(fields=["payload"], name="event_payload_gin", opclasses=["jsonb_path_ops"]),
        ]

    def __str__(self) -> str:
        return f"event {self.id}"


class PrivacyGeneration(models.Model):
    """One row: a number that every change of what is protected moves (a schema registered, a
    type's validation changed, a customer erased), in that change's transaction. Every process
    caches schemas for one generation only, and the write path reads it under a shared lock
    (events.privacy_generation)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    # Drawn from a sequence (migration 0022), not incremented: a bump that rolled back is never
    # reused, so that nothing cached inside that transaction can pass for a later one's.
    generation = models.BigIntegerField()

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="privacy_generation_one_row")]

    def __str__(self) -> str:
        return f"privacy generation {self.generation}"


class CustomerDataKey(models.Model):
    """A customer's key for its events' personal fields (events.data_keys), wrapped under
    AUDITSVC_DATA_KEY. Erasure sets wrapped to NULL: the key is gone, the row says when."""

    customer = models.CharField(max_length=200)  # the external id, as events name the customer
    wrapped = models.BinaryField(null=True)
    created_at = models.DateTimeField()
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # One live key per customer; erased ones stay beside it.
            models.UniqueConstraint(
                fields=["customer"], condition=models.Q(erased_at__isnull=True), name="customer_data_key_live"
            ),
            models.CheckConstraint(
                condition=models.Q(erased_at__isnull=True, wrapped__isnull=False) | models.Q(erased_at__isnull=False),
                name="customer_data_key_erased_or_kept",
            ),
        ]

    def __str__(self) -> str:
        return f"data key {self.pk} of {self.customer}"


class IdempotencyKey(models.Model):
    """A source's claim on an idempotency key, pointing at the event it stored.

    Kept apart from Event so that the dedupe window can expire (rows are reclaimed after
    AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS) without touching the append-only events table,
    and so that its uniqueness does not have to include the events' partition key.
    """

    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="+")
    key = models.CharField(max_length=200)
    event_id = models.UUIDField()
    # The request item's keyed fingerprint (validation.EventIn; unkeyed SHA-256 in claims made
    # before fingerprints were keyed): a retry must match it, or it is a 409.
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    # Held for good, not for the dedupe window: the claims of import_events, whose re-runs
    # must store nothing twice however late they come.
    permanent = models.BooleanField(default=False, db_default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "key"], name="idempotency_key_unique"),
        ]
        indexes = [
            # purge_idempotency_keys: DELETE ... WHERE created_at < cutoff. Claims arrive in
            # time order, so a BRIN serves that range at a fraction of a btree's upkeep per claim.
            BrinIndex(fields=["created_at"], name="idempotency_key_created_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.source_id}:{self.key}"


class HourlyCount(models.Model):
    """Events stored per source, type and hour: statistics for the admin's first page, kept
    like EventType.event_count (events.ingest.type_counts), for the last HOURLY_COUNT_DAYS days.
    Not audit data: `manage.py rebuild_event_type_counts` recounts them from the events."""

    source = models.ForeignKey(Source, on_delete=models.CASCADE, related_name="+", db_index=False)
    type = models.ForeignKey(EventType, on_delete=models.CASCADE, related_name="+", db_index=False)
    hour = models.DateTimeField()
    events = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "type", "hour"], name="hourly_count_unique")]
        indexes = [models.Index(fields=["hour"], name="hourly_count_hour")]  # the dashboard's ranges, the purge

    def __str__(self) -> str:
        return f"{self.source_id}/{self.type_id} at {self.hour:%Y-%m-%d %H}:00: {self.events}"


HOURLY_COUNT_DAYS = 35


class PendingSeal(models.Model):
    """An event stored but not yet sealed; written in the event's own transaction.

    The sealer takes committed rows from here, so an event whose transaction commits late is
    still sealed, exactly once, in the next seal: seals follow commit order, not received_at.
    """

    event_id = models.UUIDField(primary_key=True)
    received_at = models.DateTimeField()

    class Meta:
        indexes = [
            # The sealer's scan: WHERE received_at < now() - lag ORDER BY received_at, event_id.
            models.Index(fields=["received_at", "event_id"], name="pending_seal_received"),
        ]

    def __str__(self) -> str:
        return str(self.event_id)


class LostEvent(models.Model):
    """An event whose pending-seal row outlived it: acknowledged, then gone before its seal
    (a partition dropped by hand, or by retention before it locked its month). The sealer moves
    the row here so the queue never stalls on it; verification and healthcheck name each one."""

    event_id = models.UUIDField(primary_key=True)
    received_at = models.DateTimeField()
    noticed_at = models.DateTimeField()

    def __str__(self) -> str:
        return str(self.event_id)


class Seal(models.Model):
    """A Merkle root over a run of events, chained to the previous seal and optionally signed."""

    sequence = models.BigIntegerField(primary_key=True)  # 1, 2, 3...: the chain order
    created_at = models.DateTimeField()
    event_count = models.IntegerField()
    first_received_at = models.DateTimeField()
    last_received_at = models.DateTimeField()
    merkle_root = models.CharField(max_length=64)
    previous_hash = models.CharField(max_length=64)  # "0" * 64 for the first seal
    hash = models.CharField(max_length=64, unique=True)
    signature = models.CharField(max_length=128, blank=True, default="")  # hex Ed25519, or ""
    key_id = models.CharField(max_length=16, blank=True, default="")  # which public key signed

    def __str__(self) -> str:
        return f"seal {self.sequence}"


class SealEntry(models.Model):
    """Event event_id is leaf `position` of seal `seal`, with the event hash as sealed."""

    event_id = models.UUIDField(primary_key=True)  # an event is sealed once
    seal = models.ForeignKey(Seal, on_delete=models.PROTECT, related_name="entries")
    position = models.IntegerField()
    event_hash = models.CharField(max_length=64)

    class Meta:
        verbose_name_plural = "seal entries"
        constraints = [
            models.UniqueConstraint(fields=["seal", "position"], name="seal_entry_position_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.seal_id}:{self.position}"


class RetiredPartition(models.Model):
    """A partition of events that retention removed, and what proves what it held.

    Kept for good: an import of an event of its range is refused (retention_expired), and
    verify_events checks the archive named here against the seals that covered it.
    """

    table = models.CharField(max_length=63, primary_key=True)  # e.g. events_event_y2025m01
    lower_id = models.UUIDField(null=True)  # None: from the lowest id (a legacy partition)
    upper_id = models.UUIDField(null=True)  # exclusive; None: to the highest
    retired_at = models.DateTimeField()
    event_count = models.BigIntegerField()
    first_event_id = models.UUIDField(null=True)
    last_event_id = models.UUIDField(null=True)
    archive_name = models.CharField(max_length=200, blank=True, default="")  # "" with --no-archive
    archive_sha256 = models.CharField(max_length=64, blank=True, default="")
    manifest = models.JSONField(default=dict)

    def __str__(self) -> str:
        return self.table
