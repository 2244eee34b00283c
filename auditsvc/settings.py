"""auditsvc settings: every value comes from the environment (see .env.example)."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from auditsvc.alerts import admin_addresses, start_sentry
from auditsvc.deployment import deployment_environment, production_problem
from auditsvc.embedded_db import embedded_database_settings
from auditsvc.env import env_bool, env_choice, env_float, env_int, env_list, env_secret, env_str
from auditsvc.logs import FORMATS, chosen_format, configure_structlog, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("AUDITSVC_VAR_DIR", str(BASE_DIR / "var")))

# development (the default): an embedded database, a generated secret key, unsigned seals
# allowed. production: none of these; a missing setting stops the process here.
AUDITSVC_ENV = deployment_environment()
PRODUCTION = AUDITSVC_ENV == "production"
if _problem := production_problem():
    raise ImproperlyConfigured(_problem)

DEBUG = env_bool("DEBUG", default=False)


def _generated_secret_key() -> str:
    """A per-checkout key kept in var/ so local runs need no setup; production sets SECRET_KEY."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


def _development_signing_key(path: Path) -> str | None:
    """The key in path (made by `make run`), or None when there is no such file."""
    try:
        return path.read_text().strip() if path.is_file() else None
    except OSError as exc:
        raise ImproperlyConfigured(f"auditsvc: cannot read the development signing key {path}: {exc}") from None


_secret_key = env_secret("SECRET_KEY")
SECRET_KEY_FROM_ENVIRONMENT = _secret_key is not None
SECRET_KEY = _secret_key or _generated_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "auditsvc.apps.AuditAdminConfig",  # django.contrib.admin, with the log's health on its first page
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "rangefilter",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from here, not a CDN
    "django_structlog",
    "axes",  # admin login lockout (AccessAttempt rows, shown in the admin)
    "auditsvc",
    "events",
    "customers",
]

MIDDLEWARE = [
    "auditsvc.metrics.MetricsMiddleware",  # first: it times everything the others do too
    "django_structlog.middlewares.RequestMiddleware",  # a line per request; request_id (auditsvc.logs)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # answers a locked-out login attempt (last, as axes asks)
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses to authenticate a locked-out client first
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "auditsvc.urls"
WSGI_APPLICATION = "auditsvc.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
# DATABASE_URL set → that server; unset (development only) → the embedded PostgreSQL under
# var/pg, which the entry points start (auditsvc.embedded_db), not this import.
DATABASE_URL = env_str("DATABASE_URL")
EMBEDDED_DATABASE = not DATABASE_URL
_database = dict(dj_database_url.parse(DATABASE_URL)) if DATABASE_URL else embedded_database_settings(VAR_DIR / "pg")
_database.update(
    {
        # Persistent connections with a health check: a restarted database is picked up
        # again on the next request without restarting the workers.
        "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "connect_timeout": env_int("DB_CONNECT_TIMEOUT", 3, minimum=1),
            "options": f"-c statement_timeout={env_int('DB_STATEMENT_TIMEOUT_MS', 30000, minimum=0)}",
        },
        "TEST": {"NAME": env_str("TEST_DATABASE_NAME", "") or None},
    }
)
DATABASES = {"default": _database}
# service: this process connects as the service's role (docs/operations.md, "Database roles"),
# and a production system check warns if it is the tables' owner. owner: it is meant to be
# (migrate, grant_service_role, apply_retention). A superuser is warned of either way.
AUDITSVC_DATABASE_ROLE = env_choice("AUDITSVC_DATABASE_ROLE", ("service", "owner"), "service")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Internationalisation / time ---------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files (whitenoise serves them under gunicorn) --------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = env_bool("WHITENOISE_USE_FINDERS", default=False)

# --- Security ----------------------------------------------------------------------------
# Behind a TLS-terminating proxy set SECURE_TLS=true: HSTS, secure cookies, redirects.
SECURE_TLS = env_bool("SECURE_TLS", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE_TLS else None
SECURE_SSL_REDIRECT = SECURE_TLS
SESSION_COOKIE_SECURE = SECURE_TLS
CSRF_COOKIE_SECURE = SECURE_TLS
SECURE_HSTS_SECONDS = 31536000 if SECURE_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_TLS
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=SECURE_TLS)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Cache (rate limits): Redis when REDIS_URL is set, so that every worker and host shares
# the counters; otherwise per-process memory. When that Redis is down, the limits fail open
# (auditsvc.api.throttling); short timeouts keep one that does not answer from holding requests.
REDIS_URL = env_str("REDIS_URL")
CACHES: dict[str, dict[str, Any]] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "auditsvc",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "auditsvc.api.authentication.ApiKeyAuthentication",
        # Staff signed in to the admin may read (HasScope checks the view permission).
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["auditsvc.api.permissions.DenyAll"],
    "DEFAULT_RENDERER_CLASSES": ["auditsvc.api.renderers.ORJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "auditsvc.api.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_THROTTLE_CLASSES": ["auditsvc.api.throttling.ApiKeyRateThrottle"],
    "URL_FORMAT_OVERRIDE": None,  # ?format= is the export's own parameter
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "auditsvc API",
    "DESCRIPTION": (
        "Audit events for a system of microservices. Authenticate with `Authorization: Bearer <API key>`; "
        'every 4xx answers `{"errors": [{"field", "code", "message"}]}`.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "events.api.openapi.add_ingest_components",  # the ingest body, from the validation rules
    ],
}

# --- auditsvc ----------------------------------------------------------------------------
# Request body cap: checked from Content-Length before the body is read, 413 above it.
AUDITSVC_MAX_BODY_BYTES = env_int("AUDITSVC_MAX_BODY_BYTES", 5 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = AUDITSVC_MAX_BODY_BYTES
AUDITSVC_BATCH_MAX_EVENTS = env_int("AUDITSVC_BATCH_MAX_EVENTS", 1000, minimum=1)
# The accept path (events.api.accept): POST /api/v1/events with an API key is answered in front of
# Django's middleware, URL resolver and DRF, by the same rules. Off: through Django, for comparison.
AUDITSVC_ACCEPT_PATH = env_bool("AUDITSVC_ACCEPT_PATH", default=True)
# Group commit (events.ingest.group_commit): single-event POSTs of one worker share a transaction.
AUDITSVC_GROUP_COMMIT = env_bool("AUDITSVC_GROUP_COMMIT", default=True)
AUDITSVC_GROUP_COMMIT_MAX_EVENTS = env_int("AUDITSVC_GROUP_COMMIT_MAX_EVENTS", 256, minimum=1)
# A request waits this long for its group's commit before answering 503 (retry with the key).
AUDITSVC_GROUP_COMMIT_TIMEOUT_SECONDS = env_int("AUDITSVC_GROUP_COMMIT_TIMEOUT_SECONDS", 20, minimum=1)
# Stream mode (events.ingest.stream, docs/ingest-modes.md): single events are accepted into a
# durable Redis stream (202) and stored by manage.py drain_events; "direct" stores them in the request.
AUDITSVC_INGEST_MODE = env_choice("AUDITSVC_INGEST_MODE", ("direct", "stream"), "direct")
AUDITSVC_STREAM_URL = env_str("AUDITSVC_STREAM_URL") or REDIS_URL
AUDITSVC_STREAM_CLUSTER = env_bool("AUDITSVC_STREAM_CLUSTER", default=False)  # a Redis Cluster's URL
AUDITSVC_STREAM_SHARDS = env_int("AUDITSVC_STREAM_SHARDS", 1, minimum=1)
AUDITSVC_STREAM_PREFIX = env_str("AUDITSVC_STREAM_PREFIX", "auditsvc")
# Concurrent single-event accepts of one worker share one pipelined round trip (and so one AOF
# fsync); false: one round trip each. A Redis Cluster always takes one each (events.ingest.stream).
AUDITSVC_STREAM_GROUPED_APPENDS = env_bool("AUDITSVC_STREAM_GROUPED_APPENDS", default=True)
# strict: start only on a Redis that fsyncs every write before answering (appendfsync always);
# relaxed: accept any persistence, and /readyz states the loss window.
AUDITSVC_STREAM_DURABILITY = env_choice("AUDITSVC_STREAM_DURABILITY", ("strict", "relaxed"), "strict")
AUDITSVC_STREAM_BATCH = env_int("AUDITSVC_STREAM_BATCH", 1000, minimum=1)
# An entry a drainer took but has not acknowledged this long is taken over by another (XAUTOCLAIM).
AUDITSVC_STREAM_CLAIM_IDLE_SECONDS = env_int("AUDITSVC_STREAM_CLAIM_IDLE_SECONDS", 60, minimum=1)
# An entry delivered this many times without being stored goes to the dead-letter stream.
AUDITSVC_STREAM_MAX_DELIVERIES = env_int("AUDITSVC_STREAM_MAX_DELIVERIES", 5, minimum=1)
# Every stream entry carries an HMAC-SHA256 under this key, which the drainer checks: whoever can
# write to the Redis cannot store events. Web workers and drainers must share it; unset, it is
# derived from SECRET_KEY (which they share anyway).
AUDITSVC_STREAM_KEY = env_secret("AUDITSVC_STREAM_KEY") or ""
if AUDITSVC_INGEST_MODE == "stream" and not AUDITSVC_STREAM_URL:
    raise ImproperlyConfigured("auditsvc: AUDITSVC_INGEST_MODE=stream needs AUDITSVC_STREAM_URL (or REDIS_URL).")
AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS = env_int("AUDITSVC_IDEMPOTENCY_WINDOW_SECONDS", 7 * 24 * 3600, minimum=60)
# /metrics (Prometheus): with a token, for its bearer from anywhere; without one, loopback
# clients that came through no proxy (and in production no one: set it there).
AUDITSVC_METRICS_TOKEN = env_secret("AUDITSVC_METRICS_TOKEN")
# Every read of the log (API and admin) is itself an auditsvc.read event (events.access_log),
# gathered in memory and stored by a background thread of the process at least this often.
AUDITSVC_AUDIT_READS = env_bool("AUDITSVC_AUDIT_READS", default=True)
AUDITSVC_AUDIT_READS_IN_BACKGROUND = True  # tests store them when they ask (flush_access_log)
AUDITSVC_AUDIT_READS_FLUSH_SECONDS = env_float("AUDITSVC_AUDIT_READS_FLUSH_SECONDS", 1.0)
# Reads waiting while the database is away, per process; beyond this a read is not recorded
# (counted in auditsvc_reads_unrecorded_total, and logged).
AUDITSVC_AUDIT_READS_MAX_PENDING = env_int("AUDITSVC_AUDIT_READS_MAX_PENDING", 100_000, minimum=100)
# Keep events this many days, then manage.py apply_retention archives and drops whole months
# (docs: README, "Partitions and retention"). Unset: keep forever. At least a month.
AUDITSVC_RETENTION_DAYS: int | None = env_int("AUDITSVC_RETENTION_DAYS", 0, minimum=31) or None
AUDITSVC_MAX_FUTURE_SKEW_SECONDS = env_int("AUDITSVC_MAX_FUTURE_SKEW_SECONDS", 300, minimum=0)
# Strict deployments refuse event types nobody registered (manage.py create_event_type).
AUDITSVC_STRICT_EVENT_TYPES = env_bool("AUDITSVC_STRICT_EVENT_TYPES", default=False)
# Keys are stored as HMAC-SHA256(secret); changing this invalidates every API key.
AUDITSVC_API_KEY_HASH_SECRET = env_secret("AUDITSVC_API_KEY_HASH_SECRET") or SECRET_KEY
AUDITSVC_DEV_API_KEY_FILE = VAR_DIR / "dev-api-key"
AUDITSVC_DEV_ADMIN_PASSWORD_FILE = VAR_DIR / "dev-admin-password"  # make run's development superuser
# Per API key, per minute (0: unlimited). Generous: a batch counts once.
AUDITSVC_RATE_LIMIT_PER_MINUTE = env_int("AUDITSVC_RATE_LIMIT_PER_MINUTE", 120_000, minimum=0)
# Requests naming an unknown (or malformed) API key, per client address per minute (0: unlimited).
AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE = env_int("AUDITSVC_UNKNOWN_KEY_LIMIT_PER_MINUTE", 60, minimum=0)
# Admin login: this many failures per username or client address lock it for the window.
AUDITSVC_LOGIN_MAX_FAILURES = env_int("AUDITSVC_LOGIN_MAX_FAILURES", 5, minimum=1)
AUDITSVC_LOGIN_LOCKOUT_SECONDS = env_int("AUDITSVC_LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
# The TLS proxies in front of the service (addresses or networks, "10.0.0.0/8"): only from them
# is X-Forwarded-For believed, so the lockout counts clients, not the proxy they all share.
AUDITSVC_TRUSTED_PROXIES = env_list("AUDITSVC_TRUSTED_PROXIES", [])
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = AUDITSVC_LOGIN_MAX_FAILURES
AXES_COOLOFF_TIME = timedelta(seconds=AUDITSVC_LOGIN_LOCKOUT_SECONDS)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]  # either one reaching the limit locks
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "auditsvc.admin_login.locked_out"
AXES_CLIENT_IP_CALLABLE = "auditsvc.client_ip.client_ip"
AXES_VERBOSE = False
# API keys are cached per process this long: a revocation reaches every worker within it.
AUDITSVC_API_KEY_CACHE_SECONDS = env_int("AUDITSVC_API_KEY_CACHE_SECONDS", 5, minimum=0)
# How often a process reads the privacy generation again on its own (events.privacy_generation):
# stream mode's last resort when a change could not be announced to Redis; never what makes a
# registration or an erasure take effect (that is at once, docs/privacy.md).
AUDITSVC_SCHEMA_CACHE_SECONDS = env_int("AUDITSVC_SCHEMA_CACHE_SECONDS", 5, minimum=0)
# Personal and sensitive payload fields (events.protection, events.data_keys, docs/privacy.md): the master key, 32 bytes
# in base64 (manage.py create_data_key). Required in production; derived from SECRET_KEY otherwise.
AUDITSVC_DATA_KEY = env_secret("AUDITSVC_DATA_KEY") or ""
# Event-type counters are added up in memory and written at most this often (0: every commit).
AUDITSVC_TYPE_COUNT_FLUSH_SECONDS = env_int("AUDITSVC_TYPE_COUNT_FLUSH_SECONDS", 1, minimum=0)
# Tamper evidence (docs/integrity.md). Ed25519 private key: PEM or base64 of the 32-byte seed.
# Only the sealer needs it (seal_events --loop, or auto-sealing in development).
AUDIT_SIGNING_KEY = env_secret("AUDIT_SIGNING_KEY")
# Development, with no key of your own: the key `make run` keeps in var/dev-signing-key, when
# it exists, so that seal_events and verify_events run by hand in the checkout sign and check
# as its server does. Never in production; the tests turn it off (tests/settings.py).
AUDITSVC_DEV_SIGNING_KEY_FILE = VAR_DIR / "dev-signing-key"
AUDITSVC_USE_DEV_SIGNING_KEY = env_bool("AUDITSVC_USE_DEV_SIGNING_KEY", default=True) and not PRODUCTION
if AUDIT_SIGNING_KEY is None and AUDITSVC_USE_DEV_SIGNING_KEY:
    AUDIT_SIGNING_KEY = _development_signing_key(AUDITSVC_DEV_SIGNING_KEY_FILE)
# Public keys verification trusts besides the signing key's own (hex, base64 or PEM, comma or
# newline separated): earlier keys after a rotation; the sealer's key in processes that only verify.
AUDIT_PUBLIC_KEYS = env_secret("AUDIT_PUBLIC_KEYS") or ""
# Seal only events received at least this long ago (a margin for clock skew between workers).
AUDITSVC_SEAL_LAG_SECONDS = env_int("AUDITSVC_SEAL_LAG_SECONDS", 5, minimum=0)
AUDITSVC_SEAL_MAX_EVENTS = env_int("AUDITSVC_SEAL_MAX_EVENTS", 100_000, minimum=1)
# > 0: each gunicorn worker also seals every N seconds (instead of cron); 0: cron only.
AUDITSVC_AUTO_SEAL_SECONDS = env_int("AUDITSVC_AUTO_SEAL_SECONDS", 0, minimum=0)
if PRODUCTION and AUDITSVC_AUTO_SEAL_SECONDS and not AUDIT_SIGNING_KEY:
    raise ImproperlyConfigured(
        "auditsvc: AUDITSVC_AUTO_SEAL_SECONDS is set but AUDIT_SIGNING_KEY is not: production seals are "
        "always signed. Run the sealer where the key is (manage.py seal_events --loop) and set "
        "AUDITSVC_AUTO_SEAL_SECONDS=0 here."
    )

# --- Logs and alerts (auditsvc.logs, docs/operations.md) --------------------------------------
LOG_FORMAT = env_choice("LOG_FORMAT", FORMATS, chosen_format())
LOG_LEVEL = env_choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True)
LOGGING = logging_config(LOG_FORMAT, LOG_LEVEL)
configure_structlog()
DJANGO_STRUCTLOG_STATUS_START_LOG_LEVEL = logging.DEBUG  # one line per request: when it ends
DJANGO_STRUCTLOG_IP_LOGGING_ENABLED = False  # auditsvc.logs adds the address it trusts
DJANGO_STRUCTLOG_USER_ID_FIELD = None  # auditsvc.logs adds a staff user's name
# Unhandled errors are mailed to these ("Name <address>, address"), one mail per kind of error
# per interval; and sent to Sentry when SENTRY_DSN is set.
ADMINS = admin_addresses(env_str("AUDITSVC_ADMINS"))
AUDITSVC_ERROR_MAIL_INTERVAL_SECONDS = env_int("AUDITSVC_ERROR_MAIL_INTERVAL_SECONDS", 300, minimum=0)
SERVER_EMAIL = env_str("SERVER_EMAIL", "auditsvc@localhost")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", SERVER_EMAIL)
EMAIL_SUBJECT_PREFIX = env_str("EMAIL_SUBJECT_PREFIX", f"[auditsvc {AUDITSVC_ENV}] ")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
SENTRY_DSN = env_secret("SENTRY_DSN")
if SENTRY_DSN:
    start_sentry(SENTRY_DSN, environment=AUDITSVC_ENV, traces_sample_rate=env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0))
