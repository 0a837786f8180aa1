"""Seed demo data for a local run (``scripts/run-local.sh`` calls it; safe to run again).

- an ``email_accounts`` row for a mailbox on the local Dovecot (IMAPS, verified with the services' CA file), its
  password encrypted in the database with ``encrypt_email_password(pw, EMAIL_ENCRYPTION_KEY)``;
- a few demo emails in that mailbox (a thread with a reply, one with an attachment, one non-ASCII), appended
  with ``doveadm save`` (or IMAP APPEND without ``DOVECOT_CONF``) only while its INBOX is empty;
- a demo customer and thread with a PENDING outbound WhatsApp message and a VOICE message as the Exotel call
  webhook writes it (``metadata {recordingUrl, duration, direction}``, ``transcription_status`` PENDING); a
  row that was already used (sent, transcribed) is replaced by a new one on the next run;
- prints the ``python -m shared.ops`` commands that try each worker on these rows.

Settings: ``DATABASE_URL``, ``IMAP_HOST``, ``IMAPS_PORT``, ``IMAP_CA_FILE``, ``DOVECOT_CONF`` and
``IMAP_THROWAWAY_DOMAIN`` from the environment (``. "$(scripts/services.sh env)"``); ``EMAIL_ENCRYPTION_KEY``
and ``EXOTEL_SID`` from the environment, else from ``local.settings.json`` ``Values`` (as the host reads them).

    .venv/bin/python scripts/seed_demo.py [--settings local.settings.json] [--recordings-url URL]
                                          [--commands-file PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import ssl
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Any

import psycopg
from imapclient import IMAPClient
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

__all__ = ["DemoIds", "demo_emails", "main", "seed"]

log = logging.getLogger("seed_demo")

ACCOUNT_EMAIL = "demo-inbox@banxway.local"
CUSTOMER_EMAIL = "ops@acme-freight.example"
CUSTOMER_PHONE = "+919876543210"
WHATSAPP_TEXT = "Hello Priya, your quote for 2x40HC Nhava Sheva -> Rotterdam is ready."
THREAD_REFERENCE = "BX-DEMO-0001"
MAILBOX_USER = "banxway-demo"  # @IMAP_THROWAWAY_DOMAIN: the local Dovecot accepts password "secret"
MAILBOX_PASSWORD = "secret"  # noqa: S105 - the local Dovecot's fixed throwaway password
RECORDING_SECONDS = 20
DEFAULT_RECORDINGS_URL = "http://127.0.0.1:18090"
_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class DemoIds:
    """What the seed created or found."""

    account_id: str
    customer_id: str
    thread_id: str
    whatsapp_message_id: str
    voice_message_id: str
    call_sid: str
    recording_url: str
    emails_appended: int


@dataclass(frozen=True)
class Mailbox:
    """Where the demo mailbox lives and how to reach it."""

    host: str
    imaps_port: int
    user: str
    password: str
    ca_file: str | None
    dovecot_conf: str | None


# --- demo emails -------------------------------------------------------------------------------------


def _message(subject: str, sender: str, body: str, message_id: str, **headers: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ACCOUNT_EMAIL
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = message_id
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg


def demo_emails() -> list[bytes]:
    """Four RFC 822 messages: a request and its reply (one thread), one with a CSV attachment, one non-ASCII."""
    first_id = "<demo-rate-request@acme-freight.example>"
    first = _message(
        "Rate request: 2x40HC Nhava Sheva -> Rotterdam", f"Priya Shah <{CUSTOMER_EMAIL}>",
        "Hello,\n\nplease quote 2x40HC from Nhava Sheva to Rotterdam, cargo ready on the 15th.\n\nPriya\n",
        first_id,
    )
    reply = _message(
        "Re: Rate request: 2x40HC Nhava Sheva -> Rotterdam", f"Priya Shah <{CUSTOMER_EMAIL}>",
        "Adding: the cargo is not hazardous, total weight about 38 t.\n\nPriya\n",
        "<demo-rate-request-reply@acme-freight.example>", In_Reply_To=first_id, References=first_id,
    )
    attachment = _message(
        "Packing list for PO 4711", f"Priya Shah <{CUSTOMER_EMAIL}>",
        "Packing list attached.\n", "<demo-packing-list@acme-freight.example>",
    )
    attachment.add_attachment(
        b"carton,description,weight_kg\n1,brake pads,420\n2,brake discs,610\n",
        maintype="text", subtype="csv", filename="packing-list-4711.csv",
    )
    non_ascii = _message(
        "Lieferung nach München \u2013 Zollpapiere \u2713", "Jürgen Müller <juergen.mueller@spedition.example>",
        "Grüß Gott,\n\ndie Zollpapiere für die Sendung nach München sind unterwegs. Größe: 3 Paletten.\n"
        "तारीख़ की पुष्टि करें।\n\nJürgen\n",
        "<demo-muenchen@spedition.example>",
    )
    return [m.as_bytes() for m in (first, reply, attachment, non_ascii)]


def _doveadm(conf: str, *args: str, stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        ["doveadm", "-c", conf, *args], input=stdin, capture_output=True, timeout=30, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"doveadm {args[0]} failed (rc={proc.returncode}): {proc.stderr.decode().strip()}")
    return proc.stdout.decode()


def _imap(mailbox: Mailbox) -> IMAPClient:
    context = ssl.create_default_context(cafile=mailbox.ca_file)
    client = IMAPClient(mailbox.host, port=mailbox.imaps_port, ssl=True, ssl_context=context, timeout=_TIMEOUT_S)
    client.login(mailbox.user, mailbox.password)
    return client


def seed_mailbox(mailbox: Mailbox) -> int:
    """Append the demo emails when the INBOX is empty; returns how many were appended (0: left as it was)."""
    messages = demo_emails()
    if mailbox.dovecot_conf:
        out = _doveadm(mailbox.dovecot_conf, "-f", "tab", "mailbox", "status", "-u", mailbox.user, "messages",
                       "INBOX")
        header, row = out.strip().splitlines()[:2]
        if int(dict(zip(header.split("\t"), row.split("\t"), strict=True))["messages"]) > 0:
            return 0
        for raw in messages:
            _doveadm(mailbox.dovecot_conf, "save", "-u", mailbox.user, "-m", "INBOX", stdin=raw)
        return len(messages)
    client = _imap(mailbox)
    try:
        if int(client.select_folder("INBOX")[b"EXISTS"]) > 0:
            return 0
        for raw in messages:
            client.append("INBOX", raw)
        return len(messages)
    finally:
        client.logout()


# --- database rows ---------------------------------------------------------------------------------------

Db = psycopg.Connection[dict[str, Any]]


def _one(db: Db, query: str, params: list[Any] | dict[str, Any]) -> dict[str, Any]:
    row = db.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row returned by: {query.split(maxsplit=1)[0]} ...")
    return row


def _upsert_account(db: Db, mailbox: Mailbox, key: str) -> str:
    # ON CONFLICT updates the connection and password, so a new key, port or Dovecot instance takes effect.
    return str(_one(db, (
        "INSERT INTO email_accounts (name, email, smtp_user, smtp_pass_encrypted, imap_host, imap_port, imap_user,"
        " imap_pass_encrypted, imap_tls, imap_enabled, is_active, default_tags)"
        " VALUES ('Demo inbox', %(email)s, %(user)s, encrypt_email_password(%(pw)s, %(key)s), %(host)s, %(port)s,"
        " %(user)s, encrypt_email_password(%(pw)s, %(key)s), true, true, true, ARRAY['demo'])"
        " ON CONFLICT (email) DO UPDATE SET imap_host = EXCLUDED.imap_host, imap_port = EXCLUDED.imap_port,"
        " imap_user = EXCLUDED.imap_user, imap_pass_encrypted = EXCLUDED.imap_pass_encrypted,"
        " smtp_pass_encrypted = EXCLUDED.smtp_pass_encrypted, imap_tls = true, imap_enabled = true,"
        " is_active = true, last_poll_status = NULL, last_poll_error = NULL RETURNING id"),
        {"email": ACCOUNT_EMAIL, "user": mailbox.user, "pw": mailbox.password, "key": key,
         "host": mailbox.host, "port": mailbox.imaps_port},
    )["id"])


def _upsert_customer_and_thread(db: Db) -> tuple[str, str]:
    customer = _one(db, (
        "INSERT INTO customers (name, company, email, phone, tier, preferred_channel, tags)"
        " VALUES ('Priya Shah', 'Acme Freight', %s, %s, 'STANDARD', 'WHATSAPP', ARRAY['demo'])"
        " ON CONFLICT (email) DO UPDATE SET phone = EXCLUDED.phone RETURNING id"), [CUSTOMER_EMAIL, CUSTOMER_PHONE])
    thread = _one(db, (
        "INSERT INTO communication_threads (reference, type, customer_id, primary_channel, channels, tags)"
        " VALUES (%s, 'QUERY', %s, 'WHATSAPP', '[\"WHATSAPP\", \"VOICE\"]'::jsonb, ARRAY['demo'])"
        " ON CONFLICT (reference) DO UPDATE SET customer_id = EXCLUDED.customer_id RETURNING id"),
        [THREAD_REFERENCE, customer["id"]])
    return str(customer["id"]), str(thread["id"])


def _whatsapp_message(db: Db, thread_id: str) -> str:
    """The demo's PENDING outbound WhatsApp row; a new one once the last was sent or failed."""
    found = db.execute(
        "SELECT id FROM communication_messages WHERE thread_id = %s AND channel = 'WHATSAPP'"
        " AND metadata->>'demo' = 'whatsapp' AND status = 'PENDING' ORDER BY created_at DESC LIMIT 1", [thread_id],
    ).fetchone()
    if found is not None:
        return str(found["id"])
    return str(_one(db, (
        "INSERT INTO communication_messages (thread_id, channel, direction, status, content, to_addresses, metadata)"
        " VALUES (%s, 'WHATSAPP', 'OUTBOUND', 'PENDING', %s, %s, %s) RETURNING id"),
        [thread_id, WHATSAPP_TEXT,
         Jsonb([CUSTOMER_PHONE]), Jsonb({"demo": "whatsapp"})])["id"])


def _voice_message(db: Db, thread_id: str, recordings_url: str, exotel_sid: str) -> tuple[str, str, str]:
    """The demo's VOICE row awaiting transcription (as the call webhook writes it); new once transcribed."""
    found = db.execute(
        "SELECT id, external_id, metadata->>'recordingUrl' AS url FROM communication_messages"
        " WHERE thread_id = %s AND channel = 'VOICE' AND metadata->>'demo' = 'voice'"
        " AND transcription_status = 'PENDING' ORDER BY created_at DESC LIMIT 1", [thread_id],
    ).fetchone()
    if found is not None:
        return str(found["id"]), str(found["external_id"]), str(found["url"])
    count = _one(db, "SELECT count(*) AS n FROM communication_messages WHERE metadata->>'demo' = 'voice'", [])["n"]
    call_sid = f"demo-call-{int(count) + 1:04d}"
    url = (f"{recordings_url.rstrip('/')}/exotelrecordings/{exotel_sid}/{call_sid}.wav"
           f"?duration_s={RECORDING_SECONDS}")
    row = _one(db, (
        "INSERT INTO communication_messages (thread_id, channel, direction, status, content, external_id,"
        " from_address, metadata, transcription_status)"
        " VALUES (%s, 'VOICE', 'INBOUND', 'PENDING', %s, %s, %s, %s, 'PENDING') RETURNING id"),
        [thread_id, f"Call completed. Duration: {RECORDING_SECONDS}s", call_sid, CUSTOMER_PHONE,
         Jsonb({"recordingUrl": url, "duration": RECORDING_SECONDS, "direction": "inbound", "demo": "voice"})])
    return str(row["id"]), call_sid, url


def seed(database_url: str, mailbox: Mailbox, *, key: str, recordings_url: str = DEFAULT_RECORDINGS_URL,
         exotel_sid: str = "banxway-local") -> DemoIds:
    """Create (or find) every demo row and fill the demo mailbox when it is empty. Idempotent."""
    appended = seed_mailbox(mailbox)
    with psycopg.connect(database_url, row_factory=dict_row, connect_timeout=int(_TIMEOUT_S)) as db, db.transaction():
        account_id = _upsert_account(db, mailbox, key)
        customer_id, thread_id = _upsert_customer_and_thread(db)
        whatsapp_id = _whatsapp_message(db, thread_id)
        voice_id, call_sid, url = _voice_message(db, thread_id, recordings_url, exotel_sid)
    return DemoIds(account_id, customer_id, thread_id, whatsapp_id, voice_id, call_sid, url, appended)


# --- command line ------------------------------------------------------------------------------------------


def commands(ids: DemoIds, *, python: str = ".venv/bin/python") -> list[str]:
    """Shell commands that enqueue a job for each worker on the demo rows."""
    whatsapp = {"action": "SEND_MESSAGE", "data": {"threadId": ids.thread_id, "messageId": ids.whatsapp_message_id,
                                                   "to": CUSTOMER_PHONE, "text": WHATSAPP_TEXT}}
    transcription = {"messageId": ids.voice_message_id, "threadId": ids.thread_id, "audioUrl": ids.recording_url,
                     "callSid": ids.call_sid}
    ops = f"{python} -m shared.ops"
    return [
        f"{ops} enqueue whatsapp {shlex.quote(json.dumps(whatsapp, separators=(',', ':')))}",
        f"{ops} enqueue transcription {shlex.quote(json.dumps(transcription, separators=(',', ':')))}",
        f"{ops} poll-now {ids.account_id}",
    ]


def _setting(name: str, values: Mapping[str, str], default: str | None = None) -> str | None:
    # The host's rule: a non-empty environment variable wins over local.settings.json.
    return os.environ.get(name) or values.get(name) or default


def _require(name: str, values: Mapping[str, str]) -> str:
    value = _setting(name, values)
    if not value:
        raise SystemExit(f"seed_demo: {name} is not set (environment or local.settings.json Values)")
    return value


def _load_values(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def _mailbox(values: Mapping[str, str]) -> Mailbox:
    domain = os.environ.get("IMAP_THROWAWAY_DOMAIN")
    if domain:
        user, password = f"{MAILBOX_USER}@{domain}", MAILBOX_PASSWORD
    else:  # an IMAP server given by the environment: its configured user
        user, password = _require("IMAP_USER", values), _require("IMAP_PASSWORD", values)
    return Mailbox(host=_require("IMAP_HOST", values), imaps_port=int(_require("IMAPS_PORT", values)), user=user,
                   password=password, ca_file=_setting("IMAP_CA_FILE", values),
                   dovecot_conf=os.environ.get("DOVECOT_CONF") or None)


def main(argv: list[str] | None = None) -> int:
    """Seed, then print what was seeded and the commands to try each worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=Path, default=Path("local.settings.json"))
    parser.add_argument("--recordings-url", default=DEFAULT_RECORDINGS_URL,
                        help="base URL of the recording server (the local stand-in)")
    parser.add_argument("--commands-file", type=Path, help="also write the try-it commands to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="seed_demo: %(message)s")
    values = _load_values(args.settings)
    mailbox = _mailbox(values)
    ids = seed(_require("DATABASE_URL", values), mailbox, key=_require("EMAIL_ENCRYPTION_KEY", values),
               recordings_url=args.recordings_url, exotel_sid=_setting("EXOTEL_SID", values, "banxway-local") or "")
    log.info("email account %s (%s on %s:%d, IMAPS) id %s; %s", ACCOUNT_EMAIL, mailbox.user, mailbox.host,
             mailbox.imaps_port, ids.account_id,
             f"{ids.emails_appended} demo emails appended" if ids.emails_appended else "mailbox already has mail")
    log.info("customer %s, thread %s (%s)", ids.customer_id, ids.thread_id, THREAD_REFERENCE)
    log.info("pending WhatsApp message %s; VOICE message %s (call %s)", ids.whatsapp_message_id,
             ids.voice_message_id, ids.call_sid)
    lines = commands(ids)
    text = "\n".join(lines) + "\n"
    sys.stdout.write("Try each worker (after sourcing the services' env file):\n" + text)
    if args.commands_file:
        args.commands_file.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
