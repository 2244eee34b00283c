"""Verification: recompute every event hash, every seal's Merkle root and the seal chain.

Reports precise findings (docs/integrity.md lists them) instead of a yes or no.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Generator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection, transaction
from psycopg.types.json import set_json_loads

from auditsvc.worker_process import setup_django
from events.integrity import merkle, signing
from events.integrity.erasure_records import missing_keys, unreadable_keys, unrecorded_erasures
from events.integrity.hashing import EVENT_COLUMNS, EVENT_JOINS, EVENT_TYPES, envelope_of_texts, recomputed_hash
from events.integrity.retirements import accepted_retirements
from events.integrity.sealing import GENESIS_HASH, seal_hash
from events.lifecycle.archives import check_archive
from events.lifecycle.partitions import Partition
from events.models import LostEvent, RetiredPartition, Seal


@dataclass(frozen=True)
class Finding:
    """One thing wrong, precisely: kind is stable ("event_modified", "chain_broken", ...)."""

    kind: str
    detail: str
    event_id: str | None = None
    seal: int | None = None


@dataclass
class VerificationReport:
    events_checked: int = 0
    seals_checked: int = 0
    unsealed_events: int = 0
    # Sealed events of partitions retention retired: their hashes still feed the roots, and
    # given the archives each is recomputed from its archived record (archived_rechecked).
    archived_events: int = 0
    archives_checked: int = 0
    archived_rechecked: int = 0
    signatures_checked: bool = False  # no public key known: signatures could not be checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _stream(sql: str, params: list[Any], types: list[str]) -> Generator[tuple[Any, ...], None, None]:
    """Rows of sql, streamed by a binary COPY: PostgreSQL keeps producing rows while Python
    hashes the previous ones (a cursor's FETCH would make each wait for the other), and
    psycopg parses them in C; jsonb is decoded by orjson."""
    raw_connection: Any = connection.connection
    with raw_connection.cursor() as cursor:
        set_json_loads(orjson.loads, cursor)
        query = cursor.mogrify(sql, params)
        with cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(types)
            try:
                yield from copy.rows()
            except GeneratorExit:
                # Abandoned mid-stream (an error in the caller): cancel the COPY so that the
                # connection can roll back, instead of waiting on rows nobody reads.
                raw_connection.cancel_safe()
                raise


def verify_integrity(
    *,
    since: datetime | None = None,
    progress: Callable[[int], object] | None = None,
    public_keys: dict[str, Ed25519PublicKey] | None = None,
    workers: int = 1,
    archive_dir: Path | None = None,
) -> VerificationReport:
    """Recompute every event hash, every seal's Merkle root and the seal chain; report findings.

    since limits the event and Merkle checks to seals (and unsealed events) received from
    then on; the chain of seal hashes and signatures is always checked whole. Signatures are
    checked against public_keys (default: the configured ones); with none known, they cannot
    be, and the report says so.

    workers > 1 recomputes the sealed events' hashes and roots in that many processes, each
    reading the same snapshot as this one (pg_export_snapshot), with the same findings in the
    same order. Only outside a transaction: the workers must see what this process sees.

    Sealed events absent from the table are reported as archived, not missing, only inside a
    retirement that the sealed chain records with their count and digest (retirements); with
    archive_dir the archives are read and every record is checked against its seal entry.
    """
    keys = signing.trusted_public_keys() if public_keys is None else public_keys
    report = VerificationReport(signatures_checked=bool(keys))
    connection.ensure_connection()
    outermost = not connection.in_atomic_block
    with transaction.atomic(), connection.cursor() as cursor:
        if outermost:
            # One snapshot for the whole run: a seal made meanwhile cannot look like a gap.
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SET LOCAL statement_timeout = 0")
        seals = list(Seal.objects.order_by("sequence"))
        _verify_chain(seals, report, keys)
        retired, problems = accepted_retirements()
        report.findings.extend(Finding(p.kind, p.detail, p.event_id) for p in problems)
        checked = [s for s in seals if since is None or s.last_received_at >= since]
        if workers > 1 and outermost and len(checked) > 1:
            cursor.execute("SELECT pg_export_snapshot()")
            (snapshot,) = cursor.fetchone()
            _verify_in_workers(checked, since, report, progress, workers=workers, snapshot=snapshot, retired=retired)
        else:
            _verify_sealed_events(checked, report, progress, retired)
            _verify_unsealed_events(since, report, progress)
        _report_lost_events(report)
        _report_unrecorded_erasures(report)
        _report_data_key_damage(report)
        if archive_dir is not None:
            _verify_archives(archive_dir, report, progress)
    return report


def _verify_archives(archive_dir: Path, report: VerificationReport, progress: Callable[[int], object] | None) -> None:
    for retired in RetiredPartition.objects.exclude(archive_name="").order_by("retired_at"):
        partition = Partition(retired.table, retired.lower_id, retired.upper_id)
        checked, problems = check_archive(
            archive_dir / retired.archive_name, partition=partition, sha256=retired.archive_sha256, progress=progress
        )
        report.archives_checked += 1
        report.archived_rechecked += checked
        report.findings.extend(Finding(p.kind, p.detail, p.event_id) for p in problems)


def _verify_in_workers(
    seals: list[Seal],
    since: datetime | None,
    report: VerificationReport,
    progress: Callable[[int], object] | None,
    *,
    workers: int,
    snapshot: str,
    retired: list[tuple[str, str]],
) -> None:
    """The sealed events in worker processes, reading snapshot; the unsealed ones here meanwhile.
    Findings are added in the order one process would report them: seal by seal, then unsealed."""
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),  # a fork would share this connection
        initializer=setup_django,
        initargs=(connection.settings_dict["NAME"],),
    ) as pool:
        parts = [pool.submit(_verify_seals_elsewhere, snapshot, chunk, retired) for chunk in _chunks(seals, workers)]
        unsealed = VerificationReport()
        _verify_unsealed_events(since, unsealed, progress)
        for part in parts:
            events_checked, archived, findings = part.result()
            report.events_checked += events_checked
            report.archived_events += archived
            report.findings.extend(findings)
            if progress:
                progress(events_checked)
    report.events_checked += unsealed.events_checked
    report.unsealed_events += unsealed.unsealed_events
    report.findings.extend(unsealed.findings)


def _chunks(seals: list[Seal], workers: int) -> list[list[int]]:
    """Consecutive seal sequences in parts of at most an eighth of each worker's share of the
    events (a seal is never split: its root needs all its leaves), so that the pool hands the
    next part to whichever worker is free and none is left idle at the end."""
    target = max(1, sum(seal.event_count for seal in seals) // (8 * workers))
    chunks: list[list[int]] = []
    size = 0
    for seal in seals:
        if not chunks or size + seal.event_count > target:
            chunks.append([])
            size = 0
        chunks[-1].append(seal.sequence)
        size += seal.event_count
    return chunks


def _verify_seals_elsewhere(
    snapshot: str, sequences: list[int], retired: list[tuple[str, str]]
) -> tuple[int, int, list[Finding]]:
    """In a worker process: these seals' events and roots, in the snapshot of the caller."""
    part = VerificationReport()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        cursor.execute("SET LOCAL statement_timeout = 0")
        seals = list(Seal.objects.filter(sequence__in=sequences).order_by("sequence"))
        _verify_sealed_events(seals, part, None, retired)
    connection.close()
    return part.events_checked, part.archived_events, part.findings


def _verify_chain(seals: list[Seal], report: VerificationReport, keys: dict[str, Ed25519PublicKey]) -> None:
    expected_previous, expected_sequence = GENESIS_HASH, 1
    for seal in seals:
        report.seals_checked += 1
        if seal.sequence != expected_sequence:
            report.findings.append(
                Finding(
                    "seal_missing",
                    f"seal {expected_sequence} is missing before seal {seal.sequence}",
                    seal=seal.sequence,
                )
            )
        if seal.previous_hash != expected_previous:
            report.findings.append(
                Finding(
                    "chain_broken",
                    f"seal {seal.sequence} does not point at the previous seal's hash",
                    seal=seal.sequence,
                )
            )
        if seal_hash(seal) != seal.hash:
            report.findings.append(
                Finding("seal_modified", f"seal {seal.sequence}'s fields do not match its hash", seal=seal.sequence)
            )
        if keys:
            problem = signing.signature_problem(
                seal_hash=seal.hash, signature=seal.signature, signer=seal.key_id, keys=keys
            )
            if problem is not None:
                kind, why = problem
                report.findings.append(Finding(kind, f"seal {seal.sequence} {why}", seal=seal.sequence))
        expected_previous, expected_sequence = seal.hash, seal.sequence + 1


def _verify_sealed_events(  # noqa: C901 - one streaming pass, the closures keep it linear
    seals: list[Seal],
    report: VerificationReport,
    progress: Callable[[int], object] | None,
    retired: list[tuple[str, str]],
) -> None:
    """retired: the id ranges of accepted retirements, whose sealed events may be absent."""
    if not seals:
        return
    by_sequence = {seal.sequence: seal for seal in seals}
    # S608: the f-strings only splice in the constant column and join lists above.
    # The entries' own id range, as constants: the planner then reads only the partitions
    # (and the part of each) that can hold these seals' events, not all of events_event.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT min(event_id::text), max(event_id::text) FROM events_sealentry WHERE seal_id = ANY(%s)",
            [list(by_sequence)],
        )
        lowest, highest = cursor.fetchone()
    rows = _stream(
        f"SELECT se.seal_id, se.position, se.event_id::text, se.event_hash, {EVENT_COLUMNS} "
        f"FROM events_sealentry se LEFT JOIN events_event e ON e.id = se.event_id "
        f"AND e.id >= %s::uuid AND e.id <= %s::uuid "
        f"LEFT JOIN events_eventtype t ON t.id = e.type_id LEFT JOIN events_source s ON s.id = e.source_id "
        f"LEFT JOIN customers_customer c ON c.id = e.customer_id "
        f"WHERE se.seal_id = ANY(%s) ORDER BY se.seal_id, se.position",
        [lowest or _NIL_UUID, highest or _NIL_UUID, list(by_sequence)],
        ["int8", "int4", "text", "text", *EVENT_TYPES],
    )
    current: int | None = None
    leaves: list[bytes] = []
    seen: set[int] = set()

    def close(sequence: int) -> None:
        seal = by_sequence[sequence]
        if len(leaves) != seal.event_count:
            report.findings.append(Finding("seal_entries_missing",
                f"seal {sequence} lists {len(leaves)} events, sealed {seal.event_count}", seal=sequence))  # fmt: skip
        elif merkle.merkle_root(leaves).hex() != seal.merkle_root:
            report.findings.append(Finding("merkle_root_mismatch",
                f"seal {sequence}'s events, in their sealed order, do not give its Merkle root "
                "(entries reordered or rewritten)", seal=sequence))  # fmt: skip

    try:
        for row in rows:
            sequence, position, sealed_id, sealed_hash, *event = row
            if sequence != current:
                if current is not None:
                    close(current)
                current, leaves = sequence, []
                seen.add(sequence)
            leaves.append(merkle.leaf_hash(bytes.fromhex(sealed_hash)))
            report.events_checked += 1
            if event[0] is None:
                if any(low <= sealed_id < high for low, high in retired):
                    report.archived_events += 1  # a sealed retirement took it; the archive check proves it
                    continue
                gone = f"event {sealed_id} (seal {sequence}, position {position}) is gone"
                report.findings.append(Finding("event_missing", gone, str(sealed_id), sequence))
            else:
                recomputed = recomputed_hash(envelope_of_texts(*event[:10]), sealed_hash)
                if recomputed != sealed_hash or event[-1] != sealed_hash:
                    report.findings.append(Finding("event_modified",
                        f"event {sealed_id} (seal {sequence}, position {position}) no longer matches its sealed hash",
                        str(sealed_id), sequence))  # fmt: skip
            if progress and report.events_checked % 10_000 == 0:
                progress(10_000)
    finally:
        rows.close()  # an error mid-stream must not leave the COPY running
    if current is not None:
        close(current)
    for sequence in by_sequence.keys() - seen:
        leaves = []
        close(sequence)


def _verify_unsealed_events(
    since: datetime | None, report: VerificationReport, progress: Callable[[int], object] | None
) -> None:
    """Events in no seal: fine while pending; otherwise inserted behind the sealer's back."""
    rows = _stream(
        f"SELECT p.event_id IS NOT NULL, p.received_at IS DISTINCT FROM e.received_at, {EVENT_COLUMNS} "
        f"FROM events_event e {EVENT_JOINS} "
        "LEFT JOIN events_pendingseal p ON p.event_id = e.id "
        "WHERE NOT EXISTS (SELECT 1 FROM events_sealentry se WHERE se.event_id = e.id) "
        "AND e.received_at >= %s ORDER BY e.received_at, e.id",
        [since or datetime(1970, 1, 1, tzinfo=UTC)],
        ["bool", "bool", *EVENT_TYPES],
    )
    try:
        for pending, redated, *event in rows:
            report.events_checked += 1
            report.unsealed_events += 1
            event_id = str(event[0])
            if not pending:
                report.findings.append(Finding("event_inserted",
                    f"event {event_id} is in no seal and not queued for one: inserted behind the ingest path, "
                    "or its queue row was deleted", event_id))  # fmt: skip
            elif redated:
                report.findings.append(Finding("event_held_back",
                    f"unsealed event {event_id} is queued for a seal at another time than its receipt: "
                    "its queue row was changed, which keeps it from the sealer", event_id))  # fmt: skip
            elif recomputed_hash(envelope_of_texts(*event[:10]), event[-1]) != event[-1]:
                report.findings.append(Finding("event_modified",
                    f"unsealed event {event_id} does not match its hash", event_id))  # fmt: skip
            if progress and report.events_checked % 10_000 == 0:
                progress(10_000)
    finally:
        rows.close()  # an error mid-stream must not leave the COPY running


def _report_lost_events(report: VerificationReport) -> None:
    """Events acknowledged, queued for a seal, and gone before the sealer came (sealing)."""
    for lost in LostEvent.objects.order_by("received_at", "event_id")[:_LOST_LISTED]:
        report.findings.append(Finding("event_lost",
            f"event {lost.event_id} (received {lost.received_at:%Y-%m-%d %H:%M:%S} UTC) was stored and "
            "acknowledged, and was gone before it could be sealed", str(lost.event_id)))  # fmt: skip


def _report_unrecorded_erasures(report: VerificationReport) -> None:
    """Data keys destroyed without an erasure in the log (erasure_records)."""
    for gone in unrecorded_erasures(_LOST_LISTED):
        when = f" at {gone.erased_at:%Y-%m-%d %H:%M:%S} UTC" if gone.erased_at else ""
        report.findings.append(Finding("data_key_erased_unrecorded",
            f"data key {gone.key_id} of customer {gone.customer} was erased{when}, and no "
            "auditsvc.customer.erased event records it"))  # fmt: skip


def _report_data_key_damage(report: VerificationReport) -> None:
    """Live data keys that no longer open, and keys that stored ciphertexts need and that are gone
    (erasure_records): either way personal values are lost, with no erasure to say so."""
    for key in unreadable_keys(_LOST_LISTED):
        report.findings.append(Finding("data_key_unreadable",
            f"data key {key.key_id} of customer {key.customer} does not unwrap under AUDITSVC_DATA_KEY: its "
            "wrapped bytes were changed (or the master key is not the one that wrapped it)"))  # fmt: skip
    for gone in missing_keys(_LOST_LISTED):
        report.findings.append(Finding("data_key_missing",
            f"data key {gone.key_id}, under which {gone.events} stored event(s) hold ciphertexts (event "
            f"{gone.example} among them), has no row in events_customerdatakey", gone.example))  # fmt: skip


_LOST_LISTED = 1_000  # findings are listed, not counted: an operator reads them
