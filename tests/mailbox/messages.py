"""Raw RFC 5322 messages for the mailbox tests (built by hand, so each test controls every byte)."""

from __future__ import annotations

import uuid

__all__ = ["simple_message"]


def simple_message(
    *,
    subject: str = "Hello",
    body: str = "Body text",
    sender: str = "Customer <customer@example.com>",
    to: str = "Inbox <inbox@banxway.test>",
    message_id: str | None = "",
    in_reply_to: str | None = None,
    references: str | None = None,
    date: str = "Mon, 01 Jun 2026 10:00:00 +0000",
) -> bytes:
    """A small text/plain UTF-8 message; ``message_id=""`` draws a fresh one, None leaves the header out."""
    if message_id == "":
        message_id = f"<{uuid.uuid4().hex}@mail.example.com>"
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}", f"Date: {date}"]
    if message_id is not None:
        lines.append(f"Message-ID: {message_id}")
    if in_reply_to:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append(f"References: {references}")
    lines += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"', "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8")
