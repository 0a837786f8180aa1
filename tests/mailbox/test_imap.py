"""The IMAP adapter against the local Dovecot (IMAPS with its CA file, and STARTTLS on the plain port)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from imapclient.exceptions import IMAPClientAbortError as ImapClientAbort

from shared.mailbox.imap import (
    FetchedMessage,
    ImapAuthFailed,
    ImapCommandFailed,
    ImapConnector,
    ImapEndpoint,
    ImapPlaintextRefused,
    ImapTlsFailed,
    ImapUnavailable,
    MissingBody,
    OversizedMessage,
    plaintext_hosts,
)
from tests.mailbox.messages import simple_message
from tests.mailbox.plaintext_proxy import StartTlsHidingProxy
from tests.support.services import ImapAccount, ImapService


def _endpoint(service: ImapService, account: ImapAccount, *, tls: bool = True) -> ImapEndpoint:
    port = service.imaps_port if tls else service.port
    return ImapEndpoint(service.host, port, account.user, account.password, use_tls=tls)


def _connector(service: ImapService) -> ImapConnector:
    return ImapConnector(ca_file=service.ca_file, timeout_s=5.0, connect_timeout_s=2.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_select_is_read_only_and_reports_uidvalidity_uidnext_exists(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    for n in range(3):
        imap_service.append(simple_message(subject=f"m{n}"), user=imap_account.user)
    expected = imap_service.mailbox_status(user=imap_account.user)

    with _connector(imap_service).open(_endpoint(imap_service, imap_account)) as session:
        status = session.select("INBOX")
        assert session.client.folder_status("INBOX", ["UIDNEXT"])  # still connected and usable

    assert (status.uidvalidity, status.uidnext, status.exists) == (
        expected["uidvalidity"], expected["uidnext"], 3,
    )


def test_uids_after_drops_the_top_uid_that_star_ranges_always_match(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    for n in range(3):
        imap_service.append(simple_message(subject=f"m{n}"), user=imap_account.user)
    with _connector(imap_service).open(_endpoint(imap_service, imap_account)) as session:
        session.select()
        all_uids = session.uids_after(0)
        assert len(all_uids) == 3
        assert session.uids_after(all_uids[0]) == all_uids[1:]
        # "UID 99:*" matches the highest UID on the wire; the adapter must not return it.
        assert session.uids_after(all_uids[-1]) == []
        assert session.uids_after(all_uids[-1] + 100) == []


def test_uids_since_bounds_a_first_sync_by_internal_date(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    with imap_service.connect(imap_account) as client:
        old = datetime.now(UTC) - timedelta(days=40)
        client.append("INBOX", simple_message(subject="old"), msg_time=old)
        client.append("INBOX", simple_message(subject="new"))
    with _connector(imap_service).open(_endpoint(imap_service, imap_account)) as session:
        session.select()
        everything = session.uids_after(0)
        recent = session.uids_since((datetime.now(UTC) - timedelta(days=7)).date())
    assert recent == everything[1:]


def test_chunks_fetch_bodies_without_setting_seen_and_skip_oversized_messages(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    small = [simple_message(subject=f"s{n}") for n in range(5)]
    for raw in small[:2]:
        imap_service.append(raw, user=imap_account.user)
    imap_service.append(simple_message(subject="big", body="x" * 50_000), user=imap_account.user)
    for raw in small[2:]:
        imap_service.append(raw, user=imap_account.user)

    with _connector(imap_service).open(_endpoint(imap_service, imap_account)) as session:
        session.select()
        uids = session.uids_after(0)
        chunks = [items for _, items in session.iter_chunks(uids, chunk_size=2, max_message_bytes=10_000)]
        flags = session.client.fetch(uids, ["FLAGS"])

    assert [len(chunk) for chunk in chunks] == [2, 2, 2]
    items = [item for chunk in chunks for item in chunk]
    assert [item.uid for item in items] == uids
    oversized = [item for item in items if isinstance(item, OversizedMessage)]
    assert [item.uid for item in oversized] == [uids[2]]
    assert oversized[0].size > 50_000
    fetched = [item for item in items if isinstance(item, FetchedMessage)]
    # Dovecot stores the message with CRLF line ends, as it was appended.
    assert [item.raw for item in fetched] == small
    assert all(item.internaldate is not None for item in fetched)
    assert all(b"\\Seen" not in flags[uid][b"FLAGS"] for uid in uids)


def test_starttls_on_the_plain_port_verifies_the_certificate(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    with _connector(imap_service).open(_endpoint(imap_service, imap_account, tls=False)) as session:
        assert session.select().exists == 0
        assert session.client._imap.sock.version() is not None  # an SSLSocket after STARTTLS


def test_wrong_password_is_an_auth_failure(imap_service: ImapService, imap_account: ImapAccount) -> None:
    wrong = ImapAccount(imap_account.user, "not-the-password")
    with pytest.raises(ImapAuthFailed, match="authentication failed") as info:
        _connector(imap_service).open(_endpoint(imap_service, wrong))
    assert "not-the-password" not in str(info.value)


def test_unreachable_server_is_transient_with_a_clear_message(imap_service: ImapService) -> None:
    endpoint = ImapEndpoint("127.0.0.1", _free_port(), "u", "p")
    with pytest.raises(ImapUnavailable, match="unreachable") as info:
        _connector(imap_service).open(endpoint)
    assert info.value.code == "imap_unavailable"


def test_a_server_that_never_answers_times_out(imap_service: ImapService) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        endpoint = ImapEndpoint("127.0.0.1", listener.getsockname()[1], "u", "p")
        connector = ImapConnector(ca_file=imap_service.ca_file, timeout_s=0.5, connect_timeout_s=0.5)
        with pytest.raises(ImapUnavailable, match="timed out"):
            connector.open(endpoint)


def test_untrusted_certificate_fails_verification(imap_service: ImapService, imap_account: ImapAccount) -> None:
    # Without the CA file the self-signed test certificate must not be accepted.
    with pytest.raises(ImapTlsFailed, match="certificate"):
        ImapConnector(ca_file=None, timeout_s=5.0).open(_endpoint(imap_service, imap_account))


def test_selecting_a_missing_mailbox_is_a_command_failure(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    with _connector(imap_service).open(_endpoint(imap_service, imap_account)) as session, pytest.raises(
        ImapCommandFailed, match="SELECT"
    ):
        session.select("NoSuchFolder")


def test_session_closes_even_when_the_body_raises(imap_service: ImapService, imap_account: ImapAccount) -> None:
    session = _connector(imap_service).open(_endpoint(imap_service, imap_account))
    with pytest.raises(RuntimeError), session:
        raise RuntimeError("boom")
    with pytest.raises((OSError, ImapClientAbort)):  # the socket is gone
        session.client.noop()


def test_a_fetch_answer_without_the_body_yields_a_missing_body_item(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    for subject in ("first", "lost", "last"):
        imap_service.append(simple_message(subject=subject), user=imap_account.user)
    with _connector(imap_service).open(_endpoint(imap_service, imap_account)) as session:
        session.select()
        uids = session.uids_after(0)
        real_fetch = session.client.fetch

        def fetch(messages: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            answer = real_fetch(messages, data, *args, **kwargs)
            answer.get(uids[1], {}).pop(b"BODY[]", None)  # the server left this body out of its answer
            return answer

        session.client.fetch = fetch
        items = [item for _, chunk in session.iter_chunks(uids, chunk_size=10, max_message_bytes=10_000)
                 for item in chunk]

    assert [item.uid for item in items] == uids
    assert [type(item) for item in items] == [FetchedMessage, MissingBody, FetchedMessage]
    assert items[1].size > 0


def test_plain_port_without_starttls_refuses_to_send_the_password(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    with StartTlsHidingProxy(imap_service.host, imap_service.port) as proxy:
        endpoint = ImapEndpoint("127.0.0.1", proxy.port, imap_account.user, imap_account.password, use_tls=False)
        with pytest.raises(ImapPlaintextRefused, match="IMAP_ALLOW_PLAINTEXT_HOSTS") as info:
            _connector(imap_service).open(endpoint)
        sent = proxy.received
    assert info.value.code == "imap_plaintext_refused"
    assert isinstance(info.value, ImapTlsFailed)  # a Reject: polling again does not help until it is fixed
    assert imap_account.password.encode() not in sent
    assert b"LOGIN" not in sent.upper()


def test_plain_port_without_starttls_logs_in_only_for_an_allow_listed_host(
    imap_service: ImapService, imap_account: ImapAccount
) -> None:
    connector = ImapConnector(ca_file=imap_service.ca_file, timeout_s=5.0, connect_timeout_s=2.0,
                              allow_plaintext_hosts=plaintext_hosts("mail.local, 127.0.0.1"))
    with StartTlsHidingProxy(imap_service.host, imap_service.port) as proxy:
        endpoint = ImapEndpoint("127.0.0.1", proxy.port, imap_account.user, imap_account.password, use_tls=False)
        with connector.open(endpoint) as session:
            assert session.select().exists == 0
            assert not hasattr(session.client._imap.sock, "version")  # a plain socket: no STARTTLS happened
    assert plaintext_hosts(" ") == frozenset()
    assert plaintext_hosts("Mail.Local,127.0.0.1") == {"mail.local", "127.0.0.1"}
