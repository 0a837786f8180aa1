"""Parsing raw messages: charsets, headers, attachments, and malformed input that must never crash."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.message import EmailMessage

from shared.mailbox.parse import SYNTHETIC_MESSAGE_ID_DOMAIN, decode_text, parse_email, synthetic_message_id
from tests.mailbox.messages import simple_message


def test_plain_utf8_message_yields_headers_body_and_threading_ids() -> None:
    raw = simple_message(
        subject="Quote for BX-2026-1234",
        body="Hello — ünïcode",
        sender='"Asha Rao" <Asha@Example.com>',
        to="a@x.test, B <b@x.test>",
        message_id="<m1@example.com>",
        in_reply_to="<parent@example.com>",
        references="<root@example.com>\r\n <parent@example.com>",
        date="Tue, 02 Jun 2026 12:30:00 +0530",
    )
    parsed = parse_email(raw)
    assert parsed.message_id == "<m1@example.com>"
    assert not parsed.message_id_synthesised
    assert (parsed.from_address, parsed.from_name) == ("Asha@Example.com", "Asha Rao")
    assert parsed.to_addresses == [{"address": "a@x.test", "name": ""}, {"address": "b@x.test", "name": "B"}]
    assert parsed.subject == "Quote for BX-2026-1234"
    assert parsed.text.strip() == "Hello — ünïcode"
    assert parsed.in_reply_to == "<parent@example.com>"
    assert parsed.references == ["<root@example.com>", "<parent@example.com>"]
    assert parsed.sent_at == datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    assert parsed.defects == []


def test_iso_8859_1_body_and_encoded_word_subject_are_decoded() -> None:
    raw = (
        b"From: =?iso-8859-1?q?Jos=E9?= <jose@example.com>\r\n"
        b"Subject: =?ISO-8859-1?Q?Caf=E9_cr=E8me?=\r\n"
        b"Message-ID: <latin1@example.com>\r\n"
        b"Content-Type: text/plain; charset=ISO-8859-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n"
        b"Un caf\xe9 cr\xe8me, s'il vous pla\xeet.\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.subject == "Café crème"
    assert parsed.from_name == "José"
    assert parsed.text.strip() == "Un café crème, s'il vous plaît."


def test_shift_jis_body_and_subject_are_decoded() -> None:
    body = "お見積もりをお願いします。".encode("shift_jis")
    subject = base64.b64encode("見積依頼".encode("shift_jis")).decode()
    raw = (
        b"From: sender@example.jp\r\n"
        b"Subject: =?Shift_JIS?B?" + subject.encode() + b"?=\r\n"
        b"Message-ID: <sjis@example.jp>\r\n"
        b"Content-Type: text/plain; charset=Shift_JIS\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.subject == "見積依頼"
    assert parsed.text.strip() == "お見積もりをお願いします。"


def test_missing_message_id_gets_a_deterministic_hash_of_the_raw_bytes() -> None:
    raw = simple_message(message_id=None)
    first, second = parse_email(raw), parse_email(raw)
    assert first.message_id_synthesised
    assert first.message_id == second.message_id == synthetic_message_id(raw)
    assert first.message_id.endswith(f"@{SYNTHETIC_MESSAGE_ID_DOMAIN}>")
    assert len(first.message_id) <= 255
    assert parse_email(simple_message(message_id=None, body="other")).message_id != first.message_id


def test_nul_bytes_are_stripped_from_headers_and_bodies() -> None:
    raw = simple_message(subject="nul\x00here", body="a\x00b")
    parsed = parse_email(raw)
    assert "\x00" not in parsed.subject
    assert parsed.text.strip() == "ab"


def test_a_thousand_character_subject_is_kept_whole_for_the_store_to_cut() -> None:
    subject = "S" * 1000
    parsed = parse_email(simple_message(subject=subject))
    assert parsed.subject == subject


def test_unknown_charset_falls_back_and_records_a_defect() -> None:
    raw = (
        b"From: a@example.com\r\nMessage-ID: <bogus@example.com>\r\n"
        b"Content-Type: text/plain; charset=uft-8\r\n\r\ncaf\xc3\xa9\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.text.strip() == "café"
    assert "unknown charset 'uft-8'" in parsed.defects


def test_undeclared_8bit_text_is_read_as_utf8_then_windows_1252() -> None:
    assert decode_text("naïve".encode(), None) == "naïve"
    assert decode_text(b"na\xefve \x93quoted\x94", None) == "naïve \u201cquoted\u201d"


def test_multipart_with_html_and_attachments_keeps_their_content() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "Docs"
    msg["Message-ID"] = "<att@example.com>"
    msg.set_content("plain body")
    msg.add_alternative("<p>html <b>body</b></p>", subtype="html")
    msg.add_attachment(b"%PDF-1.4 binary\x00\xff", maintype="application", subtype="pdf", filename="invoice.pdf")
    msg.add_attachment("a,b\n1,2\n", subtype="csv", filename="données.csv")
    parsed = parse_email(msg.as_bytes())
    assert parsed.text.strip() == "plain body"
    assert parsed.html is not None
    assert "<b>body</b>" in parsed.html
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("invoice.pdf", "application/pdf"), ("données.csv", "text/csv"),
    ]
    assert parsed.attachments[0].content == b"%PDF-1.4 binary\x00\xff"
    assert parsed.attachments[1].content.replace(b"\r\n", b"\n") == b"a,b\n1,2\n"


def test_html_only_message_gets_a_text_rendering_for_content() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Message-ID"] = "<html@example.com>"
    msg.set_content("<html><head><style>p{}</style></head><body><p>Hi&amp;bye</p></body></html>", subtype="html")
    parsed = parse_email(msg.as_bytes())
    assert parsed.text == "Hi&bye"


def test_malformed_mime_never_raises_and_records_why() -> None:
    raw = (
        b"From: broken\r\nSubject: =?utf-8?q?unterminated\r\nMessage-ID: not-an-id\r\n"
        b"Date: yesterday-ish\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
        b"--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"!!!not base64!!!\r\n"
        b"--XYZ\r\nContent-Type: application/octet-stream; name*=bad''%ZZ\r\n"
        b"Content-Disposition: attachment; filename*=x''%FF%FE\r\n\r\n\xff\xfe\r\n"
        # no closing boundary
    )
    parsed = parse_email(raw, internaldate=datetime(2026, 6, 1, tzinfo=UTC))
    assert parsed.message_id_synthesised  # "not-an-id" is not a msg-id
    assert parsed.defects  # something was recorded
    assert parsed.sent_at == datetime(2026, 6, 1, tzinfo=UTC)  # the unparseable Date falls back


def test_garbage_bytes_parse_to_an_empty_email_with_a_synthetic_id() -> None:
    parsed = parse_email(b"\x00\xff\xfe not an email at all \x00")
    assert parsed.message_id_synthesised
    assert "\x00" not in parsed.text


def test_attached_message_is_one_attachment_and_its_message_id_is_not_taken() -> None:
    inner = simple_message(message_id="<inner@example.com>")
    raw = (
        b"From: outer@example.com\r\nSubject: Fwd\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--B\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--B--\r\n"
    )
    parsed = parse_email(raw)
    assert parsed.message_id_synthesised
    assert parsed.text.strip() == "see attached"
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]
    assert b"<inner@example.com>" in parsed.attachments[0].content


def test_future_date_is_replaced_by_the_internal_date() -> None:
    internal = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    parsed = parse_email(simple_message(date="Fri, 01 Jan 2100 00:00:00 +0000"), internaldate=internal)
    assert parsed.sent_at == internal
    assert "Date header out of range" in parsed.defects


def test_an_unusual_message_id_is_kept_exactly_so_replies_still_match_it() -> None:
    odd = "<part-1@host.test-0@example.com>"  # two "@": invalid per RFC 5322, common in the wild
    parsed = parse_email(simple_message(message_id=odd, in_reply_to=odd, references=f"<a@b> {odd}"))
    assert parsed.message_id == odd
    assert parsed.in_reply_to == odd
    assert parsed.references == ["<a@b>", odd]


def test_body_line_endings_are_stored_as_newlines_not_crlf() -> None:
    raw = (b"From: a@example.com\r\nTo: b@example.com\r\nSubject: lines\r\nMessage-ID: <crlf@example.com>\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nfirst line\r\nsecond line\r\n")
    parsed = parse_email(raw)
    assert "\r" not in parsed.text
    assert parsed.text.startswith("first line\nsecond line")
