"""Attachment uploads on Azurite: deterministic names per message, and never replacing a stored blob."""

from __future__ import annotations

import hashlib

from azure.storage.blob import BlobServiceClient

from shared.mailbox.attachments import AttachmentStore
from shared.mailbox.parse import ParsedAttachment


def _attachment(content: bytes, content_type: str = "application/pdf") -> ParsedAttachment:
    return ParsedAttachment(index=0, filename="invoice.pdf", content_type=content_type, content=content)


def test_uploading_the_same_attachment_again_gives_the_same_name_and_succeeds(
    blob_service: BlobServiceClient, attachments_container: str
) -> None:
    store = AttachmentStore(blob_service, attachments_container)
    first = store.upload("<m1@example.com>", _attachment(b"%PDF-1.4 a"))
    again = AttachmentStore(blob_service, attachments_container).upload("<m1@example.com>", _attachment(b"%PDF-1.4 a"))
    assert again == first  # a re-poll of the same message: same record, same blob
    blob = blob_service.get_blob_client(attachments_container, first["blob_name"])
    assert blob.download_blob().readall() == b"%PDF-1.4 a"


def test_different_content_under_a_reused_message_id_never_replaces_the_stored_blob(
    blob_service: BlobServiceClient, attachments_container: str
) -> None:
    store = AttachmentStore(blob_service, attachments_container)
    stored = store.upload("<m1@example.com>", _attachment(b"%PDF-1.4 real"))
    other = store.upload("<m1@example.com>", _attachment(b"<script>forged</script>", "text/html"))

    assert other["blob_name"] != stored["blob_name"]
    blob = blob_service.get_blob_client(attachments_container, stored["blob_name"])
    assert blob.download_blob().readall() == b"%PDF-1.4 real"
    assert blob.get_blob_properties().content_settings.content_type == "application/pdf"
    assert stored["sha256"] == hashlib.sha256(b"%PDF-1.4 real").hexdigest()
