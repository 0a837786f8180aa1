"""Making values safe for Banxway's columns: NUL bytes stripped, unpaired surrogates replaced, lengths cut.

PostgreSQL rejects NUL in ``text`` and ``\\u0000`` in ``jsonb``, and ``varchar(n)`` rejects longer values; the
original worker failed (and re-fetched forever) on both. Lengths count characters, as PostgreSQL does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["COLUMN_LIMITS", "clean_json", "clean_text"]

#: Character limits of the varchar columns the workers write (banxway-original.md §2).
COLUMN_LIMITS: Mapping[str, int] = {
    "subject": 500,
    "from_address": 255,
    "from_name": 255,
    "external_id": 255,
    "external_thread_id": 255,
    "customer_name": 255,
    "customer_email": 255,
    "transcription_language": 10,
    "last_poll_status": 50,
}


def clean_text(value: str | None, max_chars: int | None = None) -> str | None:
    """Strip NUL bytes, replace unpaired surrogates, and cut to ``max_chars`` characters; None stays None."""
    if value is None:
        return None
    cleaned = value.replace("\x00", "")
    try:
        cleaned.encode("utf-8")
    except UnicodeEncodeError:
        cleaned = cleaned.encode("utf-8", "replace").decode("utf-8")
    if max_chars is not None and len(cleaned) > max_chars:
        cleaned = cleaned[:max_chars]
    return cleaned


def clean_json(value: Any) -> Any:
    """The same value with every string (keys included) cleaned of NUL bytes; lists stay lists."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(str(key)): clean_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(item) for item in value]
    return value
