"""The service fixtures in tests/support/services.py reach real services and isolate tests."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import redis
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from imapclient.exceptions import LoginError

from tests.support.services import ImapAccount, ImapService, b64_queue_client


def _message(subject: str) -> bytes:
    return (
        f"From: sender@example.net\r\nTo: test@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@example.net>\r\n\r\nbody of {subject}\r\n"
    ).encode()


# --- Redis --------------------------------------------------------------------------------------


def test_redis_client_answers_ping_on_a_database_of_its_own(redis_client: redis.Redis, redis_url: str) -> None:
    assert redis_client.ping() is True
    db = int(redis_url.rsplit("/", 1)[1])
    assert 1 <= db <= 15
    assert redis_client.connection_pool.connection_kwargs["db"] == db


def test_redis_client_starts_each_test_with_an_empty_database(redis_client: redis.Redis) -> None:
    # The previous test may have left keys; the fixture flushed them.
    assert redis_client.dbsize() == 0
    redis_client.set("left-behind", "1")


def test_redis_client_flushed_what_the_previous_test_left(redis_client: redis.Redis) -> None:
    assert redis_client.get("left-behind") is None


# --- Azurite ------------------------------------------------------------------------------------


def test_queue_message_round_trips_base64_encoded(
    queue_service: QueueServiceClient, unique_queue_name: Callable[..., str]
) -> None:
    name = unique_queue_name("roundtrip")
    client = b64_queue_client(queue_service, name)
    payload = json.dumps({"action": "POLL_INBOX", "data": {"accountId": "a-1"}})

    client.send_message(payload)

    raw = queue_service.get_queue_client(name).peek_messages()[0].content
    assert base64.b64decode(raw).decode() == payload  # what the Functions host decodes
    [received] = client.receive_messages(max_messages=1, visibility_timeout=5)
    assert received.content == payload
    assert received.dequeue_count == 1
    client.delete_message(received)
    assert client.get_queue_properties().approximate_message_count == 0


def test_unique_queue_name_gives_distinct_existing_queues(
    queue_service: QueueServiceClient, unique_queue_name: Callable[..., str]
) -> None:
    first, second = unique_queue_name("email-jobs"), unique_queue_name("email-jobs")
    assert first != second
    names = {q.name for q in queue_service.list_queues(name_starts_with="email-jobs-")}
    assert {first, second} <= names


@pytest.fixture
def queues_gone_after_teardown(queue_service: QueueServiceClient) -> Iterator[list[str]]:
    """Names appended here must not exist once the fixtures set up after this one are torn down."""
    names: list[str] = []
    yield names
    left = {q.name for name in names for q in queue_service.list_queues(name_starts_with=name)}
    assert left == set(), f"queues left behind: {left}"


def test_unique_queue_name_deletes_its_queues_and_poison_queues_after_the_test(
    queues_gone_after_teardown: list[str],
    queue_service: QueueServiceClient,
    unique_queue_name: Callable[..., str],
) -> None:
    name = unique_queue_name("cleanup")
    queue_service.create_queue(f"{name}-poison")
    queues_gone_after_teardown.append(name)


def test_blob_service_stores_and_returns_a_blob(blob_service: BlobServiceClient) -> None:
    container = blob_service.create_container(f"c-{uuid.uuid4().hex[:12]}")
    try:
        container.upload_blob("audio.wav", b"RIFF")
        assert container.download_blob("audio.wav").readall() == b"RIFF"
    finally:
        container.delete_container()


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_admin_database_url_answers_select_1(admin_database_url: str) -> None:
    with psycopg.connect(admin_database_url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


@pytest.fixture
def databases_gone_after_teardown(admin_database_url: str) -> Iterator[list[str]]:
    """Database names appended here must be dropped once later fixtures are torn down."""
    names: list[str] = []
    yield names
    with psycopg.connect(admin_database_url) as conn:
        left = [n for n in names if conn.execute("select 1 from pg_database where datname = %s", (n,)).fetchone()]
    assert left == [], f"databases left behind: {left}"


def test_fresh_database_url_is_an_empty_database_dropped_after_the_test(
    databases_gone_after_teardown: list[str], fresh_database_url: str
) -> None:
    with psycopg.connect(fresh_database_url) as conn:
        tables = conn.execute("select count(*) from pg_tables where schemaname = 'public'").fetchone()
    assert tables == (0,)
    databases_gone_after_teardown.append(fresh_database_url.rsplit("/", 1)[1])


# --- Dovecot ------------------------------------------------------------------------------------


def test_imaps_login_verifies_the_server_certificate(imap_service: ImapService) -> None:
    assert imap_service.ca_file, "IMAP_CA_FILE must be set for the local Dovecot"
    client = imap_service.connect()
    try:
        assert b"UIDPLUS" in client.capabilities()
    finally:
        client.logout()


def test_imap_login_with_a_wrong_password_is_refused(imap_service: ImapService) -> None:
    with pytest.raises(LoginError):
        imap_service.connect(ImapAccount(imap_service.user, "wrong-password"))


def test_doveadm_seeded_message_is_seen_over_imap(imap_service: ImapService, imap_account: ImapAccount) -> None:
    imap_service.append(_message("seeded"), user=imap_account.user)

    client = imap_service.connect(imap_account)
    try:
        info = client.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 1
        [uid] = client.search(["ALL"])
        envelope = client.fetch([uid], ["ENVELOPE"])[uid][b"ENVELOPE"]
        assert envelope.subject == b"seeded"
    finally:
        client.logout()


def test_plain_imap_port_accepts_the_same_account(imap_service: ImapService, imap_account: ImapAccount) -> None:
    client = imap_service.connect(imap_account, use_tls=False)
    try:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        client.logout()


def test_recreated_folder_is_empty_with_a_new_uidvalidity(imap_service: ImapService, imap_account: ImapAccount) -> None:
    user = imap_account.user
    imap_service.create_folder("Processed", user=user)
    imap_service.append(_message("old"), user=user, folder="Processed")
    before = imap_service.mailbox_status("Processed", user=user)

    imap_service.recreate_folder("Processed", user=user)

    after = imap_service.mailbox_status("Processed", user=user)
    assert after["messages"] == 0
    assert after["uidvalidity"] != before["uidvalidity"]


def test_recreated_inbox_is_empty_with_a_new_uidvalidity(imap_service: ImapService, imap_account: ImapAccount) -> None:
    imap_service.append(_message("old"), user=imap_account.user)
    before = imap_service.mailbox_status(user=imap_account.user)

    imap_service.recreate_folder("INBOX", user=imap_account.user)

    client = imap_service.connect(imap_account)
    try:
        info = client.select_folder("INBOX")
        assert info[b"EXISTS"] == 0
        assert info[b"UIDVALIDITY"] != before["uidvalidity"]
    finally:
        client.logout()


def test_throwaway_users_have_separate_mailboxes(imap_service: ImapService, imap_account: ImapAccount) -> None:
    other = imap_service.create_user()
    assert other.user != imap_account.user
    imap_service.append(_message("only for the first"), user=imap_account.user)

    assert imap_service.mailbox_status(user=other.user)["messages"] == 0
    assert imap_service.mailbox_status(user=imap_account.user)["messages"] == 1
    imap_service.delete_user(other)


def test_unknown_user_outside_the_throwaway_domain_is_refused(imap_service: ImapService) -> None:
    with pytest.raises(LoginError):
        imap_service.connect(ImapAccount("nobody@example.com", "secret"))


def test_reset_user_empties_inbox_and_removes_folders(imap_service: ImapService, imap_account: ImapAccount) -> None:
    user = imap_account.user
    imap_service.create_folder("Archive", user=user)
    imap_service.append(_message("x"), user=user)

    imap_service.reset_user(user)

    assert imap_service.mailbox_status(user=user)["messages"] == 0
    assert imap_service.doveadm("mailbox", "list", "-u", user).split() == ["INBOX"]
