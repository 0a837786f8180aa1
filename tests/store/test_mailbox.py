"""Contract: accounts, mailbox lease and checkpoint — same behaviour on both backends."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from shared.store import PasswordNotDecryptable
from shared.store.base import RpcStore


def test_ping_answers(store: RpcStore) -> None:
    store.ping()


def test_concurrent_mailbox_claims_have_exactly_one_winner(store: RpcStore, make_account: Callable[..., str]) -> None:
    account = make_account()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(owner: str) -> None:
        barrier.wait()
        results.append(store.claim_mailbox(account, "INBOX", owner=owner, lease_s=60).won)

    threads = [threading.Thread(target=claim, args=(f"worker-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_expired_lease_can_be_taken_and_release_records_the_run(
    store: RpcStore, make_account: Callable[..., str]
) -> None:
    account = make_account()
    first = store.claim_mailbox(account, "INBOX", owner="a", lease_s=0.01)
    assert first.won
    assert first.state is not None
    assert first.state.last_uid == 0
    assert first.state.uidvalidity is None
    time.sleep(0.05)
    second = store.claim_mailbox(account, "INBOX", owner="b", lease_s=60)
    assert second.won
    assert not store.claim_mailbox(account, "INBOX", owner="a", lease_s=60).won
    assert not store.renew_mailbox_lease(account, "INBOX", owner="a", lease_s=60)
    assert store.renew_mailbox_lease(account, "INBOX", owner="b", lease_s=60)
    assert not store.release_mailbox(account, "INBOX", owner="a")
    assert store.release_mailbox(account, "INBOX", owner="b", error="IMAP login failed")
    third = store.claim_mailbox(account, "INBOX", owner="c", lease_s=60)
    assert third.won
    assert third.state is not None
    assert third.state.consecutive_failures == 1


def test_claiming_a_missing_account_says_missing(store: RpcStore) -> None:
    claim = store.claim_mailbox("00000000-0000-0000-0000-000000000001", "INBOX", owner="a", lease_s=60)
    assert claim.outcome == "missing"
    assert not claim.won


def test_checkpoint_moves_forward_only_for_the_lease_holder(
    store: RpcStore, make_account: Callable[..., str]
) -> None:
    account = make_account()
    assert store.claim_mailbox(account, "INBOX", owner="a", lease_s=60).won
    assert store.advance_checkpoint(account, "INBOX", owner="a", uidvalidity=7, last_uid=100)
    assert store.advance_checkpoint(account, "INBOX", owner="a", uidvalidity=7, last_uid=50)  # no regression
    assert not store.advance_checkpoint(account, "INBOX", owner="intruder", uidvalidity=7, last_uid=900)
    store.release_mailbox(account, "INBOX", owner="a")
    state = store.claim_mailbox(account, "INBOX", owner="b", lease_s=60).state
    assert state is not None
    assert (state.uidvalidity, state.last_uid) == (7, 100)
    # A new UIDVALIDITY resets the checkpoint to what the poller says.
    assert store.advance_checkpoint(account, "INBOX", owner="b", uidvalidity=8, last_uid=3)
    store.release_mailbox(account, "INBOX", owner="b")
    state = store.claim_mailbox(account, "INBOX", owner="c", lease_s=60).state
    assert state is not None
    assert (state.uidvalidity, state.last_uid) == (8, 3)


def test_pollable_accounts_are_active_and_imap_enabled_with_their_lease(
    store: RpcStore, make_account: Callable[..., str]
) -> None:
    polled = make_account(name="A inbox", poll_interval_ms=60_000)
    idle = make_account(name="B inbox")
    make_account(name="C inactive", active=False)
    make_account(name="D no imap", imap_enabled=False)
    store.claim_mailbox(polled, "INBOX", owner="a", lease_s=60)
    accounts = store.list_pollable_accounts()
    assert [account.id for account in accounts] == [polled, idle]
    assert accounts[0].leased
    assert accounts[0].poll_interval_ms == 60_000
    assert accounts[0].lease_expires_at
    assert not accounts[1].leased
    assert accounts[1].last_polled_at is None


def test_account_password_is_decrypted_with_the_first_key_that_fits(
    store: RpcStore, make_account: Callable[..., str]
) -> None:
    account_id = make_account(password="pässwörd-秘密", key="legacy-key")
    account = store.get_email_account(account_id, keys=["current-key", "legacy-key"])
    assert account is not None
    assert account.imap_password == "pässwörd-秘密"
    assert "pässwörd" not in repr(account)
    assert account.imap_port == 993
    assert account.imap_tls


def test_account_password_no_key_fits_raises_a_reject(store: RpcStore, make_account: Callable[..., str]) -> None:
    account_id = make_account(key="legacy-key")
    with pytest.raises(PasswordNotDecryptable) as caught:
        store.get_email_account(account_id, keys=["wrong-1", "wrong-2", ""])
    assert "2 configured key" in str(caught.value)
    assert store.get_email_account("00000000-0000-0000-0000-000000000002", keys=["x"]) is None


def test_poll_status_is_recorded_on_the_account(
    store: RpcStore, make_account: Callable[..., str], db: psycopg.Connection[dict[str, Any]]
) -> None:
    account_id = make_account()
    store.update_poll_status(account_id, error="LOGIN failed\x00: bad credentials")
    row = db.execute("SELECT * FROM email_accounts WHERE id = %s", [account_id]).fetchone()
    assert row is not None
    assert row["last_poll_status"] == "FAILED"
    assert row["last_poll_error"] == "LOGIN failed: bad credentials"
    assert row["last_polled_at"] is not None
    store.update_poll_status(account_id, error=None)
    row = db.execute("SELECT * FROM email_accounts WHERE id = %s", [account_id]).fetchone()
    assert row is not None
    assert row["last_poll_status"] == "SUCCESS"
    assert row["last_poll_error"] is None
