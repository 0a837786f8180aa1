"""IMAP adapter (imapclient): connect with verified TLS and explicit timeouts, read a mailbox incrementally.

Only what the poller needs: ``SELECT`` read-only (UIDVALIDITY / UIDNEXT / EXISTS), UIDs above a checkpoint,
UIDs inside a backfill window, and ``RFC822.SIZE`` + ``BODY.PEEK[]`` in chunks (so nothing gets ``\\Seen``).

Facts it relies on (shared/reference/external-apis.md §3):

- ``UID n:*`` always matches the highest UID even when ``n`` is above it, so UIDs ``<= last_uid`` are dropped
  client-side;
- imapclient 4.x rejects range strings in ``fetch()``, so ranges go through ``search`` and fetches take
  explicit UID lists (chunked, which also keeps command lines short);
- the FETCH result key for ``BODY.PEEK[]`` is ``b'BODY[]'``, and results may carry unsolicited entries.

Errors are classified for the caller: ``ImapAuthFailed`` (the account's credentials are wrong),
``ImapTlsFailed`` (certificate not trusted; ``ImapPlaintextRefused``: a plain-text account on a server without
STARTTLS), ``ImapUnavailable`` (refused, timed out, dropped; transient)
and ``ImapCommandFailed`` (the server said NO/BAD to a command; transient). The connection is always closed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from shared.errors import Reject, RetryLater, WorkerError

__all__ = [
    "FetchedMessage",
    "ImapAuthFailed",
    "ImapCommandFailed",
    "ImapConnector",
    "ImapEndpoint",
    "ImapError",
    "ImapPlaintextRefused",
    "ImapSession",
    "ImapTlsFailed",
    "ImapUnavailable",
    "MailboxStatus",
    "MissingBody",
    "OversizedMessage",
    "plaintext_hosts",
]

log = logging.getLogger(__name__)

#: Upper bound on the bytes of one BODY.PEEK[] command: a chunk of large messages is split further.
MAX_FETCH_BYTES = 32 * 1024 * 1024


class ImapError(WorkerError):
    """Base of the IMAP adapter's errors (each also says what happens next: retry or reject)."""

    code = "imap_error"


class ImapAuthFailed(ImapError, Reject):
    """The server rejected the account's credentials; polling again will not help until they change."""

    code = "imap_auth_failed"


class ImapTlsFailed(ImapError, Reject):
    """The TLS handshake failed (certificate not trusted, wrong host name); fix IMAP_CA_FILE or the host."""

    code = "imap_tls_failed"


class ImapPlaintextRefused(ImapTlsFailed):
    """The account is set up without TLS and the server offers no STARTTLS: the password is not sent in plain
    text (unless the host is listed in ``IMAP_ALLOW_PLAINTEXT_HOSTS``, meant for local test servers)."""

    code = "imap_plaintext_refused"


class ImapUnavailable(ImapError, RetryLater):
    """The server could not be reached, timed out or dropped the connection; try again later."""

    code = "imap_unavailable"


class ImapCommandFailed(ImapError, RetryLater):
    """The server answered NO/BAD to a command (e.g. a missing mailbox, a server-side limit)."""

    code = "imap_command_failed"


@dataclass(frozen=True)
class ImapEndpoint:
    """Where and as whom to log in. ``repr`` leaves the password out."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    use_tls: bool = True


@dataclass(frozen=True)
class MailboxStatus:
    """What a read-only SELECT reports. ``uidnext`` is None when the server omits it."""

    uidvalidity: int
    uidnext: int | None
    exists: int
    highest_modseq: int | None = None


@dataclass(frozen=True)
class FetchedMessage:
    """One message's raw RFC 5322 bytes, with its UID and the server's INTERNALDATE (if sent)."""

    uid: int
    raw: bytes
    size: int
    internaldate: datetime | None = None


@dataclass(frozen=True)
class OversizedMessage:
    """A message over the size cap: its body was not fetched."""

    uid: int
    size: int


@dataclass(frozen=True)
class MissingBody:
    """A message whose size was fetched but whose ``BODY[]`` the FETCH answer left out (a server hiccup, or
    expunged meanwhile): recorded as a failure and retried on a later poll."""

    uid: int
    size: int


def plaintext_hosts(value: str | None) -> frozenset[str]:
    """The host names of ``IMAP_ALLOW_PLAINTEXT_HOSTS`` (comma- or space-separated, case-insensitive)."""
    return frozenset(host.strip().lower() for host in (value or "").replace(",", " ").split() if host.strip())


def _as_int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ImapSession:
    """A logged-in IMAP connection (it receives its ``IMAPClient``). Use as a context manager: it always
    closes, logging out when it can and dropping the socket when it cannot."""

    def __init__(self, client: IMAPClient) -> None:
        self._client = client
        self._closed = False

    @property
    def client(self) -> IMAPClient:
        """The underlying imapclient connection (for tests and benchmarks)."""
        return self._client

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Log out (bounded by the read timeout), then make sure the socket is gone. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.logout()
        except (IMAPClientError, OSError):
            try:
                self._client.shutdown()
            except (IMAPClientError, OSError):
                log.debug("IMAP socket already closed")

    def select(self, mailbox: str = "INBOX") -> MailboxStatus:
        """``SELECT`` read-only (``EXAMINE``): UIDVALIDITY, UIDNEXT, EXISTS (and HIGHESTMODSEQ if sent)."""
        with _classified(f"SELECT {mailbox}"):
            info = self._client.select_folder(mailbox, readonly=True)
        uidvalidity = _as_int(info.get(b"UIDVALIDITY"))
        if uidvalidity is None:
            raise ImapCommandFailed(f"the server sent no UIDVALIDITY for mailbox {mailbox!r}")
        return MailboxStatus(
            uidvalidity=uidvalidity,
            uidnext=_as_int(info.get(b"UIDNEXT")),
            exists=_as_int(info.get(b"EXISTS")) or 0,
            highest_modseq=_as_int(info.get(b"HIGHESTMODSEQ")),
        )

    def uids_after(self, last_uid: int) -> list[int]:
        """UIDs greater than ``last_uid``, ascending (``UID n:*`` also matches the top UID: dropped here)."""
        with _classified("UID SEARCH"):
            found = self._client.search(["UID", f"{last_uid + 1}:*"])
        return sorted(uid for uid in (int(u) for u in found) if uid > last_uid)

    def uids_since(self, day: date) -> list[int]:
        """UIDs of messages whose internal date is on or after ``day`` (day-granular, server's zone)."""
        with _classified("UID SEARCH SINCE"):
            found = self._client.search(["SINCE", day])
        return sorted(int(u) for u in found)

    def sizes(self, uids: Sequence[int]) -> dict[int, tuple[int, datetime | None]]:
        """``RFC822.SIZE`` and ``INTERNALDATE`` of ``uids`` (missing UIDs — expunged meanwhile — are absent)."""
        if not uids:
            return {}
        with _classified("UID FETCH RFC822.SIZE"):
            data = self._client.fetch(list(uids), ["RFC822.SIZE", "INTERNALDATE"])
        result: dict[int, tuple[int, datetime | None]] = {}
        for uid, item in data.items():
            size = _as_int(item.get(b"RFC822.SIZE"))
            if size is not None:
                internal = item.get(b"INTERNALDATE")
                result[int(uid)] = (size, internal if isinstance(internal, datetime) else None)
        return result

    def bodies(self, uids: Sequence[int]) -> dict[int, bytes]:
        """``BODY.PEEK[]`` of ``uids`` (read without setting ``\\Seen``); key ``b'BODY[]'`` in the answer."""
        if not uids:
            return {}
        with _classified("UID FETCH BODY.PEEK[]"):
            data = self._client.fetch(list(uids), ["BODY.PEEK[]"])
        result: dict[int, bytes] = {}
        for uid, item in data.items():
            body = item.get(b"BODY[]")
            if isinstance(body, bytes):
                result[int(uid)] = body
        return result

    def iter_chunks(
        self, uids: Sequence[int], *, chunk_size: int, max_message_bytes: int
    ) -> Iterator[tuple[list[int], list[FetchedMessage | OversizedMessage | MissingBody]]]:
        """Yield ``(requested UIDs, messages)`` chunk by chunk over ``uids`` (ascending): sizes first, then the
        bodies of those within ``max_message_bytes``. A UID without a size (expunged before the first FETCH) is
        left out; a UID with a size whose body the answer lacks is a ``MissingBody`` (the caller retries it)."""
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), chunk_size):
            chunk = ordered[start : start + chunk_size]
            sizes = self.sizes(chunk)
            wanted = [uid for uid in chunk if uid in sizes and sizes[uid][0] <= max_message_bytes]
            bodies: dict[int, bytes] = {}
            for batch in _byte_batches(wanted, {uid: sizes[uid][0] for uid in wanted}):
                bodies.update(self.bodies(batch))
            out: list[FetchedMessage | OversizedMessage | MissingBody] = []
            for uid in chunk:
                if uid not in sizes:
                    continue
                size, internal = sizes[uid]
                if size > max_message_bytes:
                    out.append(OversizedMessage(uid, size))
                elif uid in bodies:
                    out.append(FetchedMessage(uid, bodies[uid], size, internal))
                else:
                    log.warning("IMAP FETCH answer had no BODY[] for UID %s (%s bytes)", uid, size)
                    out.append(MissingBody(uid, size))
            yield chunk, out


def _byte_batches(uids: Sequence[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for uid in uids:
        if batch and total + sizes[uid] > MAX_FETCH_BYTES:
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += sizes[uid]
    if batch:
        yield batch


@contextlib.contextmanager
def _classified(what: str) -> Iterator[None]:
    """Turn socket and imapclient exceptions raised inside into the adapter's error classes."""
    try:
        yield
    except ImapError:
        raise
    except (IMAPClientError, OSError) as exc:
        error = _classify(exc, what)
        if error is None:
            raise
        raise error from exc


def _classify(exc: BaseException, what: str) -> ImapError | None:  # noqa: PLR0911 - one return per class: a table
    if isinstance(exc, LoginError):
        text = str(exc)
        if "UNAVAILABLE" in text.upper():
            return ImapUnavailable(f"IMAP server temporarily refused the login: {text}")
        return ImapAuthFailed(f"IMAP authentication failed: {text}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapTlsFailed(f"IMAP TLS certificate verification failed: {exc.verify_message or exc}")
    if isinstance(exc, socket.timeout | TimeoutError):
        return ImapUnavailable(f"IMAP {what} timed out")
    if isinstance(exc, IMAPClientAbortError):
        return ImapUnavailable(f"IMAP connection dropped during {what}: {exc}")
    if isinstance(exc, socket.gaierror):
        return ImapUnavailable(f"IMAP host name could not be resolved: {exc}")
    if isinstance(exc, ssl.SSLError):
        return ImapTlsFailed(f"IMAP TLS handshake failed: {exc}")
    if isinstance(exc, OSError):
        return ImapUnavailable(f"IMAP server unreachable during {what}: {exc.strerror or exc}")
    if isinstance(exc, IMAPClientError):
        return ImapCommandFailed(f"IMAP {what} failed: {exc}")
    return None


@dataclass(frozen=True)
class ImapConnector:
    """Opens ``ImapSession`` s: TLS verification always on (system CAs plus ``ca_file`` for private
    servers), connect and read timeouts always set. Plain-port endpoints upgrade with STARTTLS; when the
    server does not offer it the password is not sent (``ImapPlaintextRefused``) unless the host is in
    ``allow_plaintext_hosts`` (``IMAP_ALLOW_PLAINTEXT_HOSTS``: local test servers only)."""

    ca_file: str | None = None
    timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    allow_plaintext_hosts: frozenset[str] = frozenset()

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying context (hostname checks on) that also trusts ``ca_file``."""
        context = ssl.create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context

    def open(self, endpoint: ImapEndpoint) -> ImapSession:
        """Connect and log in. Raises ``ImapAuthFailed``, ``ImapTlsFailed`` (``ImapPlaintextRefused``) or
        ``ImapUnavailable``."""
        timeout = SocketTimeout(connect=min(self.connect_timeout_s, self.timeout_s), read=self.timeout_s)
        context = self.ssl_context()
        with _classified(f"connect to {endpoint.host}:{endpoint.port}"):
            client = IMAPClient(
                endpoint.host, port=endpoint.port, ssl=endpoint.use_tls, ssl_context=context, timeout=timeout
            )
        session = ImapSession(client)
        try:
            with _classified("login"):
                if not endpoint.use_tls:
                    self._upgrade_or_refuse(client, endpoint, context)
                client.login(endpoint.user, endpoint.password)
        except BaseException:
            session.close()
            raise
        return session

    def _upgrade_or_refuse(self, client: IMAPClient, endpoint: ImapEndpoint, context: ssl.SSLContext) -> None:
        """On a plain port: STARTTLS, or plain text for an allow-listed host, or refuse before the password."""
        if client.has_capability("STARTTLS"):
            client.starttls(context)
        elif endpoint.host.lower() in self.allow_plaintext_hosts:
            log.warning("IMAP server %s offers no TLS: logging in over plain text (allowed by "
                        "IMAP_ALLOW_PLAINTEXT_HOSTS)", endpoint.host)
        else:
            raise ImapPlaintextRefused(
                f"IMAP server {endpoint.host}:{endpoint.port} offers no TLS (no STARTTLS on a plain port): "
                "refusing to send the password in plain text; enable TLS for the account, or list the host "
                "in IMAP_ALLOW_PLAINTEXT_HOSTS (local test servers only)"
            )
