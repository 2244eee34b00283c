from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from events.database_roles import RoleError, grant_service_role


class Command(BaseCommand):
    help = (
        "Give a PostgreSQL role the rights the service needs and no more: SELECT and INSERT on the "
        "append-only tables, read and write on the others, TRUNCATE and DDL nowhere. Run as the tables' "
        "owner after every migrate (docs/operations.md, 'Database roles')."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", help="the service's role, e.g. auditsvc_service (create it first)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            statements = grant_service_role(role=options["role"])
        except RoleError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"] >= 2:
            for statement in statements:
                self.stdout.write(statement)
        self.stdout.write(f"{options['role']}: rights on {sum('GRANT' in s for s in statements)} objects granted.")
