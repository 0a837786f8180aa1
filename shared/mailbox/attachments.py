"""Email attachments into Blob storage (Azurite locally) under deterministic names.

Name: ``<sha256(Message-ID)[:32]>/<sha256(content)>/<index>-<safe filename>``. Keyed by the Message-ID, not
by the IMAP UID, so a repeated poll, a UIDVALIDITY resync or a second mailbox receiving the same email all
name the same blob instead of leaving orphans. The content hash is part of the name because Message-IDs are
public (quoted in In-Reply-To/References): a later email reusing one, with different bytes, gets another
name and can never replace a stored customer's attachment. Uploads never overwrite (``overwrite=False``);
"already exists" means the same bytes are already there (the name says so), which is success. The record
kept on the message row is ``{filename, content_type, size, sha256, container, blob_name, url, content_id,
inline}``; its ``sha256`` is the one in ``blob_name``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob import ContentSettings

from shared.errors import RetryLater
from shared.mailbox.parse import ParsedAttachment

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

__all__ = ["AttachmentStore", "AttachmentStoreUnavailable", "attachment_blob_name"]

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILENAME_CHARS = 120


class AttachmentStoreUnavailable(RetryLater):
    """Blob storage refused or failed an upload; the message is retried on a later poll."""

    code = "attachment_store_unavailable"


def attachment_blob_name(message_id: str, index: int, filename: str, content_sha256: str) -> str:
    """The deterministic blob name of attachment ``index`` (hex ``content_sha256``) of email ``message_id``."""
    digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:32]
    safe = _UNSAFE.sub("_", filename).strip("._") or "attachment"
    return f"{digest}/{content_sha256}/{index}-{safe[-_MAX_FILENAME_CHARS:]}"


class AttachmentStore:
    """Uploads attachments to one container (created on first use). Receives its ``BlobServiceClient``."""

    def __init__(self, blob_service: BlobServiceClient, container: str) -> None:
        self._service = blob_service
        self._container = container
        self._ready = False
        self._lock = threading.Lock()

    def _ensure_container(self) -> None:
        with self._lock:
            if self._ready:
                return
            with contextlib.suppress(ResourceExistsError):
                self._service.create_container(self._container)
            self._ready = True

    def upload(self, message_id: str, attachment: ParsedAttachment) -> dict[str, Any]:
        """Upload one attachment (never overwriting: an existing blob of that name holds the same bytes) and
        return the record for the message row.

        Raises ``AttachmentStoreUnavailable`` when Blob storage fails.
        """
        sha256 = hashlib.sha256(attachment.content).hexdigest()
        name = attachment_blob_name(message_id, attachment.index, attachment.filename, sha256)
        try:
            self._ensure_container()
            blob = self._service.get_blob_client(self._container, name)
            with contextlib.suppress(ResourceExistsError):  # an earlier poll of this very message stored it
                blob.upload_blob(
                    attachment.content,
                    overwrite=False,
                    content_settings=ContentSettings(content_type=attachment.content_type),
                )
        except AzureError as exc:
            raise AttachmentStoreUnavailable(
                f"attachment upload to container {self._container!r} failed: {type(exc).__name__}"
            ) from exc
        return {
            "filename": attachment.filename,
            "content_type": attachment.content_type,
            "size": attachment.size,
            "sha256": sha256,
            "container": self._container,
            "blob_name": name,
            "url": blob.url,
            "content_id": attachment.content_id,
            "inline": attachment.inline,
        }
