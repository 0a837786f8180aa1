"""Log redaction: secrets from the settings never leave the process; phone numbers and addresses are masked.

``install_log_redaction(settings)`` wraps the logging record factory, so every record from every logger is
redacted once, when it is created — before any handler (console, the platform worker's, Azure Monitor's)
sees it. ``RedactingFilter`` does the same work as a ``logging.Filter`` for a single handler.

What is replaced:

- every secret value of ``Settings.secret_values()`` — and the parts of it that show up on their own
  (the password of a URL, the ``AccountKey``/``SharedAccessSignature`` of a connection string) — by ``***``;
- phone numbers (``+919876543210`` → ``+*********3210``) and e-mail addresses (``ops@example.com`` →
  ``o***@example.com``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = [
    "RedactingFilter",
    "Redactor",
    "install_log_redaction",
    "mask_email",
    "mask_phone",
    "redact",
    "secret_fragments",
    "uninstall_log_redaction",
]

_MIN_SECRET_CHARS = 4
_SECRET_MASK = "***"  # noqa: S105 - the replacement, not a secret

# A phone number: "+" and 8-15 digits (separators allowed), or a bare run of 10-15 digits; never part of a
# longer word, UUID, version or address.
_PHONE = re.compile(
    r"(?<![\w.:/-])(?:\+\d(?:[ ().-]?\d){7,14}|\d{10,15})(?![\w]|[.:-]\d)"
)
_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9._%+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_CONN_STRING_SECRET_KEYS = ("accountkey", "sharedaccesssignature", "instrumentationkey", "password", "pwd")


def mask_phone(number: str) -> str:
    """Keep the last four digits (and a leading ``+``); every other digit becomes ``*``."""
    digits = [i for i, ch in enumerate(number) if ch.isdigit()]
    keep = set(digits[-4:])
    return "".join(ch if (not ch.isdigit() or i in keep) else "*" for i, ch in enumerate(number))


def mask_email(address: str) -> str:
    """Keep the first character of the local part and the domain: ``o***@example.com``."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


def secret_fragments(value: str) -> list[str]:
    """The secret itself and the parts of it that may be logged on their own."""
    found = [value]
    parts = urlsplit(value) if "://" in value else None
    if parts is not None and parts.password:
        found += [parts.password, unquote(parts.password)]
    if "=" in value and ";" in value:
        for item in value.split(";"):
            key, sep, part = item.partition("=")
            if sep and key.strip().lower() in _CONN_STRING_SECRET_KEYS:
                found.append(part)
    return [f for f in dict.fromkeys(found) if len(f) >= _MIN_SECRET_CHARS]


class Redactor:
    """Replaces secret values and masks phone numbers and e-mail addresses in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        fragments = {frag for secret in secrets if secret for frag in secret_fragments(secret)}
        # Longest first, so a whole connection string goes before its AccountKey.
        ordered = sorted(fragments, key=len, reverse=True)
        self._secrets = re.compile("|".join(re.escape(s) for s in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        """``text`` with secrets replaced and personal data masked."""
        if self._secrets is not None:
            text = self._secrets.sub(_SECRET_MASK, text)
        text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
        return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)

    def record(self, record: logging.LogRecord) -> None:
        """Redact a log record in place: its message (args merged in), its exception text and stack."""
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        redacted = self(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self(text)
            if record.exc_text != text:
                # The exception object itself carries the secret; exporters would read it from exc_info.
                record.exc_info = None
        elif record.exc_text:
            record.exc_text = self(record.exc_text)
        if record.stack_info:
            record.stack_info = self(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, self(value))


_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("n", 0, "p", 0, "m", (), None))) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """A ``logging.Filter`` that redacts each record it passes (never drops one)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record`` in place; always keep it."""
        self._redactor.record(record)
        return True


_install_lock = threading.Lock()
_installed: dict[str, Any] = {}


def install_log_redaction(secrets: Iterable[str]) -> Redactor:
    """Redact every log record created from now on in this process (idempotent; the latest secrets win)."""
    redactor = Redactor(secrets)
    with _install_lock:
        _installed["redactor"] = redactor
        if "previous" not in _installed:
            previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
            _installed["previous"] = previous

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                _installed["redactor"].record(record)
                return record

            logging.setLogRecordFactory(factory)
    return redactor


def redact(text: str) -> str:
    """``text`` through the installed redactor (masking only, when none is installed).

    For values passed as ``extra=`` to a log call: the record factory runs before ``extra`` is applied.
    """
    redactor: Redactor = _installed.get("redactor") or _MASK_ONLY
    return redactor(text)


_MASK_ONLY = Redactor()


def uninstall_log_redaction() -> None:
    """Restore the record factory that was in place before ``install_log_redaction`` (tests)."""
    with _install_lock:
        previous = _installed.pop("previous", None)
        _installed.pop("redactor", None)
        if previous is not None:
            logging.setLogRecordFactory(previous)
