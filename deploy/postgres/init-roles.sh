#!/bin/sh
# The two roles of docs/operations.md ("Database roles"), made once when the database volume is
# new (the postgres image runs /docker-entrypoint-initdb.d/* then). The owner owns the database,
# hence its public schema and every table migrations make; the service role owns nothing, and
# gets its rights from `manage.py grant_service_role` after each migrate.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner_password="$AUDITSVC_DB_OWNER_PASSWORD" -v service_password="$AUDITSVC_DB_SERVICE_PASSWORD" <<'SQL'
CREATE ROLE auditsvc_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE auditsvc_service LOGIN PASSWORD :'service_password';
ALTER DATABASE :"DBNAME" OWNER TO auditsvc_owner;
REVOKE ALL ON DATABASE :"DBNAME" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"DBNAME" TO auditsvc_service;
SQL
