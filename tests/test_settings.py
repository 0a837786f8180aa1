"""Settings: one typed object, validated on first use, errors that name the variable and never its value."""

import logging

import pytest

from shared.errors import ConfigurationError
from shared.settings import Settings

SECRET = "s3cr3t-value-that-must-not-leak"


def test_defaults_follow_the_seed():
    settings = Settings.from_env({})
    assert settings.email_poll_interval_ms == 30_000
    assert settings.exotel_api_url == "https://api.exotel.com"
    assert settings.email_queue_name == "email-processing"
    assert settings.whatsapp_queue_name == "whatsapp-processing"
    assert settings.transcription_queue_name == "transcription-processing"


def test_concurrency_settings_must_be_whole_numbers_in_range():
    assert Settings.from_env({"WORKER_CONCURRENCY": "7"}).worker_concurrency == 7
    with pytest.raises(ConfigurationError, match="WHATSAPP_WORKER_CONCURRENCY"):
        Settings.from_env({"WHATSAPP_WORKER_CONCURRENCY": "0"})
    with pytest.raises(ConfigurationError, match="EMAIL_WORKER_CONCURRENCY"):
        Settings.from_env({"EMAIL_WORKER_CONCURRENCY": "many"})


def test_malformed_values_are_named_without_their_values():
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(
            {
                "REDIS_URL": f"http://user:{SECRET}@host",
                "EMAIL_POLL_INTERVAL": "soon",
                "WHATSAPP_QUEUE_NAME": "Bad_Queue",
                "DATABASE_URL": f"mysql://{SECRET}@db",
            }
        )
    message = str(caught.value)
    for name in ("REDIS_URL", "EMAIL_POLL_INTERVAL", "WHATSAPP_QUEUE_NAME", "DATABASE_URL"):
        assert name in message
    assert SECRET not in message
    assert SECRET not in repr(caught.value)


def test_require_names_every_missing_variable():
    settings = Settings.from_env({"EXOTEL_SID": "acme"})
    with pytest.raises(ConfigurationError, match="EXOTEL_API_KEY, EXOTEL_TOKEN"):
        settings.require("EXOTEL_SID", "EXOTEL_API_KEY", "EXOTEL_TOKEN")


def test_empty_values_count_as_unset():
    settings = Settings.from_env({"REDIS_URL": "  ", "EXOTEL_SID": ""})
    assert settings.redis_url is None
    assert settings.exotel_sid is None


def test_store_backend_is_chosen_by_the_settings():
    assert Settings.from_env({"DATABASE_URL": "postgresql://u@h/db"}).store_backend == "postgres"
    supabase = Settings.from_env({"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"})
    assert supabase.store_backend == "supabase"
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        _ = Settings.from_env({"SUPABASE_URL": "https://x.supabase.co"}).store_backend


def test_secrets_never_appear_in_repr_or_logs(caplog):
    settings = Settings.from_env({"EXOTEL_TOKEN": SECRET, "OPENAI_API_KEY": SECRET + "2"})
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("settings: %s %r", settings, settings)
    assert SECRET not in caplog.text
    assert SECRET not in repr(settings)
    assert set(settings.secret_values()) == {SECRET, SECRET + "2"}


def test_schedule_must_be_ncrontab():
    with pytest.raises(ConfigurationError, match="EMAIL_POLL_SCHEDULE"):
        Settings.from_env({"EMAIL_POLL_SCHEDULE": "every minute"})
    assert Settings.from_env({"EMAIL_POLL_SCHEDULE": "0 */5 * * * *"}).email_poll_schedule == "0 */5 * * * *"
