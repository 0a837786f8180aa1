"""Contract: misconfiguration gives clear errors; transient failures are "retry later"."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from shared.errors import ConfigurationError, RetryLater
from shared.settings import Settings
from shared.store import StoreConfigurationError, StoreUnavailable, build_store
from shared.store.base import RpcStore
from shared.store.postgres import PostgresStore
from shared.store.supabase import SupabaseStore
from tests.support.database import database_dsn
from tests.support.postgrest import PostgrestStandIn


def test_settings_choose_the_backend(database_url: str) -> None:
    assert isinstance(build_store(Settings.from_env({"DATABASE_URL": database_url})), PostgresStore)
    supabase = Settings.from_env({"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "k"})
    assert isinstance(build_store(supabase), SupabaseStore)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        build_store(Settings.from_env({}))


def test_unknown_database_in_database_url_is_a_configuration_error(database_url: str) -> None:
    store = PostgresStore(database_dsn(database_url, "bx_no_such_database"), connect_timeout_s=1)
    with pytest.raises(StoreConfigurationError, match=r"DATABASE_URL.*does not exist"):
        store.ping()
    store.close()


def test_malformed_database_url_is_a_configuration_error() -> None:
    with pytest.raises(StoreConfigurationError, match="DATABASE_URL"):
        PostgresStore("postgresql://user:secret@host/db?no_such_option=1")


def test_refused_connection_is_retry_later_naming_the_host() -> None:
    store = PostgresStore("postgresql://postgres:s3cret@127.0.0.1:1/banxway", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1") as caught:
        store.ping()
    assert "s3cret" not in str(caught.value)
    store.close()
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1.*SUPABASE_URL"):
        SupabaseStore("http://127.0.0.1:1", "key", timeout_s=2).ping()


def test_bad_service_role_key_is_a_configuration_error(postgrest: PostgrestStandIn) -> None:
    store = SupabaseStore(postgrest.url, "not-the-service-role-key", timeout_s=5)
    with pytest.raises(StoreConfigurationError, match=r"SUPABASE_SERVICE_ROLE_KEY.*Invalid API key"):
        store.ping()
    store.close()


def test_unmigrated_database_says_so(make_database: Any) -> None:
    store = PostgresStore(make_database(template=False), connect_timeout_s=2)
    with pytest.raises(StoreConfigurationError, match="migrate"):
        store.list_pollable_accounts()
    store.close()


def test_a_connection_killed_mid_statement_is_retry_later(
    store: RpcStore, make_message: Any, database_url: str
) -> None:
    message = make_message()
    errors: list[BaseException] = []
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM communication_messages WHERE id = %s FOR UPDATE", [message])

        def start() -> None:
            try:
                store.start_transcription(message, owner="a", lease_s=60)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        worker = threading.Thread(target=start)
        worker.start()
        with psycopg.connect(database_url, autocommit=True) as admin:
            for _ in range(100):
                killed = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                ).fetchall()
                if killed:
                    break
                time.sleep(0.05)
            assert killed, "the store's statement never waited on the lock"
        worker.join(timeout=30)
        blocker.rollback()
    assert len(errors) == 1, errors
    assert isinstance(errors[0], RetryLater)
    assert isinstance(errors[0], StoreUnavailable)
