"""Apply the store's SQL files and record them, with checksums, in ``bx_schema_migrations``.

    python -m shared.store.migrate              # production: additive migrations only
    python -m shared.store.migrate --baseline   # local runs and tests: Banxway's tables first, then migrations

DATABASE_URL is read from the environment. Each file runs in its own transaction under an advisory lock, so
two runners never interleave. A file already recorded with the same checksum is skipped; one whose checksum
changed is an error (write a new migration instead) unless ``--reapply`` is given — every file is idempotent,
so re-applying is safe.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
from dataclasses import dataclass
from importlib import resources

import psycopg

from shared.errors import ConfigurationError

__all__ = ["MIGRATIONS_TABLE", "MigrationError", "SchemaFile", "apply_schema", "main", "schema_files"]

logger = logging.getLogger(__name__)

MIGRATIONS_TABLE = "bx_schema_migrations"
_LOCK_KEY = 0x62785F6D6967  # "bx_mig"


class MigrationError(ConfigurationError):
    """The database's recorded migrations disagree with the files shipped in this build."""


@dataclass(frozen=True)
class SchemaFile:
    """One SQL file: ``name`` is ``<folder>/<file>``, ``checksum`` the SHA-256 of its text."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def schema_files(*, baseline: bool) -> list[SchemaFile]:
    """The files to apply, in order: ``baseline/*`` (only when asked), then ``migrations/*``."""
    root = resources.files("shared.store") / "schema"
    folders = ["baseline", "migrations"] if baseline else ["migrations"]
    found: list[SchemaFile] = []
    for folder in folders:
        entries = sorted((entry for entry in (root / folder).iterdir() if entry.name.endswith(".sql")),
                         key=lambda entry: entry.name)
        found.extend(SchemaFile(f"{folder}/{entry.name}", entry.read_text(encoding="utf-8")) for entry in entries)
    return found


def apply_schema(conninfo: str, *, baseline: bool = False, reapply: bool = False) -> list[str]:
    """Apply pending files; return the names applied. Raises ``MigrationError`` on a changed file."""
    applied = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
                " name text PRIMARY KEY, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute(f"ALTER TABLE {MIGRATIONS_TABLE} ENABLE ROW LEVEL SECURITY")
            recorded: dict[str, str] = dict(
                conn.execute(f"SELECT name, checksum FROM {MIGRATIONS_TABLE}").fetchall()  # noqa: S608 - constant
            )
            for schema_file in schema_files(baseline=baseline):
                previous = recorded.get(schema_file.name)
                if previous == schema_file.checksum and not reapply:
                    continue
                if previous is not None and previous != schema_file.checksum and not reapply:
                    raise MigrationError(
                        f"{schema_file.name} changed after it was applied (checksum differs); add a new "
                        "migration file, or re-run with --reapply (all files are idempotent)"
                    )
                with conn.transaction():
                    conn.execute(schema_file.sql.encode("utf-8"))
                    conn.execute(
                        f"INSERT INTO {MIGRATIONS_TABLE} (name, checksum) VALUES (%s, %s)"  # noqa: S608 - constant
                        " ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
                        [schema_file.name, schema_file.checksum],
                    )
                logger.info("applied %s", schema_file.name)
                applied.append(schema_file.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return applied


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; DATABASE_URL comes from the environment."""
    parser = argparse.ArgumentParser(prog="python -m shared.store.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", action="store_true", help="also create Banxway's tables (local/tests only)")
    parser.add_argument("--reapply", action="store_true", help="re-run every file, even if already recorded")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    conninfo = os.environ.get("DATABASE_URL", "").strip()
    if not conninfo:
        logger.error("DATABASE_URL must be set")
        return 2
    try:
        applied = apply_schema(conninfo, baseline=args.baseline, reapply=args.reapply)
    except MigrationError as exc:
        logger.error("%s", exc)  # noqa: TRY400 - the message is the whole story
        return 1
    except psycopg.Error as exc:
        logger.error("migration failed: %s: %s", type(exc).__name__, str(exc).strip())  # noqa: TRY400
        return 1
    logger.info("%d file(s) applied", len(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main())
