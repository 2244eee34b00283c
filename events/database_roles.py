"""The two database roles of a deployment (docs/operations.md, "Database roles").

The tables' owner runs the migrations and the commands that change the schema
(apply_retention detaches and drops partitions). Every long-running process (web workers,
sealer, drainer, the daily partitions job) connects as the service role, which may read and
append but never rewrite the record: on the append-only tables it holds only SELECT and
INSERT, on the retirements and the migrations only SELECT, it holds TRUNCATE nowhere, and,
owning nothing, it can neither ALTER nor DROP a table nor disable a trigger. A superuser can
do all of that, which is why the service must not be one.
"""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection, transaction

# What the seals prove and what the sealer sets aside: appended to, never changed.
APPEND_ONLY_TABLES = (
    "events_event",
    "events_seal",
    "events_sealentry",
    "events_lostevent",
)
# Written only by the owner: migrations, and the retirements apply_retention records (a row
# the service could add would close a month to imports and partitions, and halt retention).
READ_ONLY_TABLES = ("django_migrations", "events_retiredpartition")
# The seal queue: the write path appends, the sealer takes rows away; nothing moves a row's
# time (which would keep its event from the sealer, unseen).
QUEUE_TABLES = ("events_pendingseal",)
# The privacy generation's one row (events.privacy_generation): read by every write, moved by an
# upsert (INSERT and UPDATE) in every registration and erasure; never deleted (a delete and a
# re-insert could hand out a number some process already cached under).
SINGLE_ROW_TABLES = ("events_privacygeneration",)
# Customers' data keys: made (INSERT) and erased (an UPDATE that nulls the wrapped key, which
# verify_events matches to a recorded erasure); never deleted, which would destroy a customer's
# personal data with no row left to say so.
KEY_TABLES = ("events_customerdatakey",)
# The owner's SECURITY DEFINER functions the service calls (migration 0019).
SERVICE_FUNCTIONS = ("auditsvc_create_month_partition(integer, integer)",)


class RoleError(Exception):
    pass


def grant_service_role(*, role: str) -> list[str]:
    """Give role exactly the service's rights on every table of the schema; idempotent.

    Run as the tables' owner after every migrate: a table a migration adds has no grant
    until then. Rights granted earlier and not in the policy are taken back.
    """
    quote = connection.ops.quote_name
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper, rolname = current_user FROM pg_roles WHERE rolname = %s", [role])
        found = cursor.fetchone()
        if found is None:
            raise RoleError(f"there is no role {role!r}: create it first (docs/operations.md, 'Database roles')")
        if found[0] or found[1] or role_owns_events(role):
            raise RoleError(f"{role!r} is a superuser or the tables' owner: the service role must be neither")
        cursor.execute(
            "SELECT c.relname, c.relkind FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
            " AND c.relkind IN ('r', 'p', 'S') AND NOT c.relispartition ORDER BY c.relname"
        )
        relations = cursor.fetchall()
        cursor.execute("SELECT current_schema()")
        (schema,) = cursor.fetchone()
        statements = [f"GRANT USAGE ON SCHEMA {quote(schema)} TO {quote(role)}"]
        for name, kind in relations:
            statements.append(f"REVOKE ALL ON {quote(name)} FROM {quote(role)}")
            statements.append(f"GRANT {_table_rights(name, kind)} ON {quote(name)} TO {quote(role)}")
        statements += [f"GRANT EXECUTE ON FUNCTION {function} TO {quote(role)}" for function in SERVICE_FUNCTIONS]
        for statement in statements:
            cursor.execute(statement)
    return statements


def _table_rights(name: str, kind: str) -> str:
    if kind == "S":
        return "USAGE, SELECT"
    if name in APPEND_ONLY_TABLES:
        return "SELECT, INSERT"
    if name in READ_ONLY_TABLES:
        return "SELECT"
    if name in QUEUE_TABLES:
        return "SELECT, INSERT, DELETE"
    if name in SINGLE_ROW_TABLES or name in KEY_TABLES:
        return "SELECT, INSERT, UPDATE"
    return "SELECT, INSERT, UPDATE, DELETE"


def role_owns_events(role: str) -> bool:
    """Whether role owns events_event or inherits its owner's rights."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_has_role(%s, c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = 'events_event'::regclass",
            [role],
        )
        row = cursor.fetchone()
    return bool(row and row[0])


def may_change_the_schema() -> bool:
    """Whether this connection may detach and drop partitions (the owner, or a superuser)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        (superuser,) = cursor.fetchone() or (False,)
        cursor.execute("SELECT current_user")
        (user,) = cursor.fetchone()
    return bool(superuser) or role_owns_events(user)


def connection_role_problem() -> str | None:
    """What is wrong with the role this process connects as, for a service process; None if nothing.

    A process that is meant to run as the owner (migrate, apply_retention) says so with
    AUDITSVC_DATABASE_ROLE=owner; a superuser is wrong for every process.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user")
            user, superuser = cursor.fetchone() or ("?", False)
        owner = role_owns_events(user)
    except DatabaseError:
        return None  # no database yet (or no tables): nothing to say about the role
    if superuser:
        return f"the service connects to PostgreSQL as {user!r}, a superuser, who can disable every trigger"
    if owner and settings.AUDITSVC_DATABASE_ROLE != "owner":
        return (
            f"the service connects to PostgreSQL as {user!r}, the owner of the events tables, who can disable"
            " their triggers"
        )
    return None
