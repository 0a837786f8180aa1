"""Parse a raw RFC 5322 message with the standard library's modern email API (``email.policy.default``).

Byte-exact: the message is parsed from the bytes IMAP returned, every text part is decoded in its declared
charset (falling back to UTF-8, then Windows-1252, which decodes any byte), headers are RFC 2047-decoded.
Malformed input never raises out of ``parse_email``: each problem becomes a note in ``ParsedEmail.defects``
(only a message the parser cannot even open raises ``EmailParseError``).

**A missing Message-ID** becomes ``<sha256-of-the-raw-bytes@no-message-id.banxway>``. Derived from the
bytes, not from (account, mailbox, UIDVALIDITY, UID), so the same message seen again after a UIDVALIDITY
change, or fetched twice by overlapping polls, dedupes to one row; two byte-identical messages without a
Message-ID are, reasonably, one message. The id is never empty (the original stored ``''`` and then
silently dropped every later message without one).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import html
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Any

from shared.errors import Reject

__all__ = [
    "SYNTHETIC_MESSAGE_ID_DOMAIN",
    "EmailParseError",
    "ParsedAttachment",
    "ParsedEmail",
    "decode_text",
    "parse_email",
    "synthetic_message_id",
]

log = logging.getLogger(__name__)

SYNTHETIC_MESSAGE_ID_DOMAIN = "no-message-id.banxway"
_MAX_SUBJECT_CHARS = 2000  # the store cuts to the column (500); this only bounds work on absurd headers
_MAX_DEFECTS = 20
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_EARLIEST_SENT_AT = datetime(1990, 1, 1, tzinfo=UTC)


class EmailParseError(Reject):
    """The bytes are not an email at all (the parser itself failed); the reason is recorded."""

    code = "email_parse_failed"


@dataclass(frozen=True)
class ParsedAttachment:
    """One attachment (or inline part) with its content. ``index`` is its position among attachments."""

    index: int
    filename: str
    content_type: str
    content: bytes = field(repr=False)
    content_id: str | None = None
    inline: bool = False

    @property
    def size(self) -> int:
        """Size of the decoded content in bytes."""
        return len(self.content)


@dataclass(frozen=True)
class ParsedEmail:
    """What the poller stores of one message. Text has no NUL bytes."""

    message_id: str
    message_id_synthesised: bool
    raw_sha256: str
    from_address: str
    from_name: str | None
    to_addresses: list[dict[str, str]]
    cc_addresses: list[dict[str, str]]
    subject: str
    text: str
    html: str | None
    in_reply_to: str | None
    references: list[str]
    sent_at: datetime | None
    attachments: list[ParsedAttachment]
    defects: list[str]


def synthetic_message_id(raw: bytes) -> str:
    """The deterministic Message-ID of a message that has none: ``<sha256(raw)@no-message-id.banxway>``."""
    return f"<{hashlib.sha256(raw).hexdigest()}@{SYNTHETIC_MESSAGE_ID_DOMAIN}>"


def _no_nul(value: str) -> str:
    return value.replace("\x00", "")


def decode_text(payload: bytes, charset: str | None, defects: list[str] | None = None) -> str:
    """Decode a text part in its declared charset; never fails.

    Declared and valid → that. Declared but invalid bytes → UTF-8 if that fits, else the declared charset
    with U+FFFD for the bad bytes. Undeclared, ASCII or unknown (``uft-8``) → UTF-8, else Windows-1252.
    Problems are noted in ``defects``. Line endings come back as ``\n`` (mail travels with CRLF).
    """
    declared = charset.strip().strip('"').lower() if charset else None
    if declared:
        try:
            codecs.lookup(declared)
        except LookupError:
            _note(defects, f"unknown charset {declared!r}")
            declared = None
    if declared and declared not in ("us-ascii", "ascii"):
        try:
            return _body_text(payload.decode(declared))
        except UnicodeDecodeError:
            _note(defects, f"text is not valid {declared}")
        if codecs.lookup(declared).name != "utf-8":
            with contextlib.suppress(UnicodeDecodeError):
                return _body_text(payload.decode("utf-8"))
        return _body_text(payload.decode(declared, errors="replace"))
    try:
        return _body_text(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return _body_text(payload.decode("cp1252", errors="replace"))


def _body_text(text: str) -> str:
    return _no_nul(text).replace("\r\n", "\n")


def _note(defects: list[str] | None, text: str) -> None:
    if defects is not None and len(defects) < _MAX_DEFECTS and text not in defects:
        defects.append(text)


def _header(msg: Message, name: str, defects: list[str]) -> str | None:
    """A header's decoded value; on a parse error, the raw value decoded as well as possible."""
    try:
        value = msg.get(name)
        return None if value is None else _no_nul(str(value))
    except Exception as exc:  # noqa: BLE001 - the email package raises many types on malformed headers
        _note(defects, f"{name} header unparseable ({type(exc).__name__})")
    for key, raw in msg.raw_items():
        if key.lower() == name.lower():
            return _no_nul(str(raw))
    return None


def _raw_header(msg: Message, name: str) -> str | None:
    """A header's value as sent (unfolded), for tokens the policy would rewrite: Message-ID, References."""
    for key, raw in msg.raw_items():
        if key.lower() == name:
            return _no_nul(" ".join(str(raw).split()))
    return None


def _addresses(msg: Message, name: str, defects: list[str]) -> list[dict[str, str]]:
    raw = _header(msg, name, defects)
    if not raw:
        return []
    out = []
    for display, address in getaddresses([raw]):
        if address or display:
            out.append({"address": address.strip(), "name": display.strip()})
    return out


def _message_ids(value: str | None) -> list[str]:
    return _MSGID_RE.findall(value or "")


def _sent_at(msg: Message, defects: list[str], internaldate: datetime | None) -> datetime | None:
    raw = _header(msg, "date", defects)
    when: datetime | None = None
    if raw:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            _note(defects, "Date header unparseable")
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # RFC 5322 "-0000": no zone information; treat as UTC
    latest = datetime.now(UTC) + timedelta(days=1)
    if when is not None and not (_EARLIEST_SENT_AT <= when <= latest):
        _note(defects, "Date header out of range")
        when = None
    if when is None and internaldate is not None:
        when = internaldate if internaldate.tzinfo else internaldate.replace(tzinfo=UTC)
    return when


class _TextFromHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:  # noqa: ARG002 - signature fixed
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _html_to_text(markup: str) -> str:
    extractor = _TextFromHtml()
    try:
        extractor.feed(markup)
        extractor.close()
    except Exception:  # noqa: BLE001 - a preview is best effort; fall back to unescaped markup
        return html.unescape(re.sub(r"<[^>]+>", " ", markup))
    text = "".join(extractor.parts)
    return re.sub(r"\n\s*\n+", "\n\n", re.sub(r"[ \t]+", " ", text)).strip()


def _leaves(part: Message) -> list[Message]:
    """Leaf parts in order; an attached message (``message/rfc822``) is one leaf, not descended into."""
    if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
        out: list[Message] = []
        for sub in part.get_payload():
            if isinstance(sub, Message):
                out.extend(_leaves(sub))
        return out
    return [part]


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # noqa: BLE001 - malformed Content-Disposition
        return None


def _filename(part: Message, index: int, defects: list[str]) -> str:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001 - malformed RFC 2231 parameters
        _note(defects, "attachment filename unparseable")
        name = None
    return _no_nul(name).strip() if name else f"attachment-{index + 1}"


def _part_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            return inner[0].as_bytes(policy=policy.SMTP)
    payload: Any = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload
    text = part.get_payload()
    return text.encode("utf-8", "surrogateescape") if isinstance(text, str) else b""


def _bodies_and_attachments(
    msg: Message, defects: list[str]
) -> tuple[str | None, str | None, list[ParsedAttachment]]:
    text: str | None = None
    markup: str | None = None
    attachments: list[ParsedAttachment] = []
    for part in _leaves(msg):
        ctype = part.get_content_type()
        disposition = _disposition(part)
        is_body_candidate = ctype in ("text/plain", "text/html") and disposition != "attachment"
        if is_body_candidate and not (disposition == "inline" and part.get_filename()):
            decoded = decode_text(_part_bytes(part), part.get_content_charset(), defects)
            if ctype == "text/plain" and text is None:
                text = decoded
                continue
            if ctype == "text/html" and markup is None:
                markup = decoded
                continue
        if ctype.startswith("multipart/"):
            continue  # an empty or broken multipart container: nothing to keep
        index = len(attachments)
        content_id = part.get("content-id")
        attachments.append(ParsedAttachment(
            index=index, filename=_filename(part, index, defects), content_type=ctype,
            content=_part_bytes(part), content_id=str(content_id).strip("<> ") if content_id else None,
            inline=disposition == "inline",
        ))
    return text, markup, attachments


def _structure_defects(msg: Message, defects: list[str]) -> None:
    for part in msg.walk():
        for defect in getattr(part, "defects", ()):
            _note(defects, type(defect).__name__)


def parse_email(raw: bytes, *, internaldate: datetime | None = None) -> ParsedEmail:
    """Parse ``raw`` into a ``ParsedEmail``; ``internaldate`` stands in for a missing or absurd Date.

    Never raises on malformed MIME or headers (they are noted in ``defects``); raises ``EmailParseError``
    only when the parser itself fails.
    """
    raw_sha256 = hashlib.sha256(raw).hexdigest()
    try:
        msg: EmailMessage = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as exc:  # the stdlib parser is documented not to raise; be safe on hostile input
        raise EmailParseError(f"email could not be parsed: {type(exc).__name__}: {exc}") from exc
    defects: list[str] = []
    _structure_defects(msg, defects)

    # Threading ids come from the raw header: the policy's Message-ID parser rewrites ids it finds invalid
    # (e.g. drops everything after a second "@"), which would no longer match In-Reply-To in replies.
    ids = _message_ids(_raw_header(msg, "message-id"))
    message_id = ids[0] if ids else synthetic_message_id(raw)
    sender_raw = _header(msg, "from", defects) or ""
    from_name, from_address = parseaddr(sender_raw)
    subject = " ".join((_header(msg, "subject", defects) or "").split())
    if len(subject) > _MAX_SUBJECT_CHARS:
        subject = subject[:_MAX_SUBJECT_CHARS]
    try:
        text, markup, attachments = _bodies_and_attachments(msg, defects)
    except Exception as exc:  # noqa: BLE001 - keep whatever headers we have; record why the body is missing
        log.warning("email body could not be decoded: %s", type(exc).__name__)
        _note(defects, f"body undecodable ({type(exc).__name__})")
        text, markup, attachments = None, None, []
    if text is None:
        text = _html_to_text(markup) if markup else ""
    in_reply_to = _message_ids(_raw_header(msg, "in-reply-to"))
    return ParsedEmail(
        message_id=message_id,
        message_id_synthesised=not ids,
        raw_sha256=raw_sha256,
        from_address=_no_nul(from_address).strip(),
        from_name=_no_nul(from_name).strip() or None,
        to_addresses=_addresses(msg, "to", defects),
        cc_addresses=_addresses(msg, "cc", defects),
        subject=subject,
        text=text,
        html=markup,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=_message_ids(_raw_header(msg, "references")),
        sent_at=_sent_at(msg, defects, internaldate),
        attachments=attachments,
        defects=defects,
    )
