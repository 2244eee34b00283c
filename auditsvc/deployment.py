"""`AUDITSVC_ENV=production`: the one switch that turns every development convenience off.

Read from the environment alone (no Django settings), so that manage.py and gunicorn can refuse to
start with one message before anything else happens, and settings.py enforces the same rule
for every other entry point.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from auditsvc.env import FALSE_WORDS

ENVIRONMENTS = ("development", "production")


def deployment_environment(environ: Mapping[str, str] = os.environ) -> str:
    value = (environ.get("AUDITSVC_ENV") or "development").strip().lower()
    if value not in ENVIRONMENTS:
        raise ValueError(f"AUDITSVC_ENV must be one of {', '.join(ENVIRONMENTS)}, got {value!r}")
    return value


def _is_set(environ: Mapping[str, str], name: str) -> bool:
    return bool((environ.get(name) or "").strip() or (environ.get(f"{name}_FILE") or "").strip())


def missing_production_settings(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The variables a production process lacks: no embedded database, no generated secret,
    no unsigned seal (a process that only verifies may hold the public keys instead), no
    personal field encrypted under a key derived from another secret."""
    missing = [name for name in ("DATABASE_URL", "SECRET_KEY") if not _is_set(environ, name)]
    if not _is_set(environ, "AUDIT_SIGNING_KEY") and not _is_set(environ, "AUDIT_PUBLIC_KEYS"):
        missing.append("AUDIT_SIGNING_KEY (or, for a process that only verifies, AUDIT_PUBLIC_KEYS)")
    if not _is_set(environ, "AUDITSVC_DATA_KEY"):
        missing.append("AUDITSVC_DATA_KEY")
    return missing


def production_problem(environ: Mapping[str, str] = os.environ) -> str | None:
    """The message that stops a production process, or None when it may start."""
    try:
        if deployment_environment(environ) != "production":
            return None
    except ValueError as exc:
        return f"auditsvc: {exc}"
    missing = missing_production_settings(environ)
    if missing:
        return (
            "auditsvc: AUDITSVC_ENV=production, but these settings are missing: "
            + "; ".join(missing)
            + ". Set them (or NAME_FILE pointing at a file) and start again; see .env.example."
        )
    if (debug := (environ.get("DEBUG") or "").strip().lower()) and debug not in FALSE_WORDS:
        return (
            "auditsvc: DEBUG is refused with AUDITSVC_ENV=production: its error pages show settings, "
            "local variables and decrypted payloads to whoever makes a request fail. Unset DEBUG."
        )
    return None
