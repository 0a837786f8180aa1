-- Per-mailbox idempotency and failed-message record, keyed by (account, mailbox, UIDVALIDITY, UID).
CREATE TABLE IF NOT EXISTS email_ingest_log (
    id bigserial PRIMARY KEY,
    email_account_id uuid NOT NULL REFERENCES email_accounts(id) ON DELETE CASCADE,
    mailbox text NOT NULL,
    uidvalidity bigint NOT NULL,
    uid bigint NOT NULL,
    message_id text,
    raw_sha256 text,
    status text NOT NULL CHECK (status IN ('stored', 'duplicate', 'skipped', 'failed')),
    communication_message_id uuid REFERENCES communication_messages(id) ON DELETE SET NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (email_account_id, mailbox, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS idx_email_ingest_log_message_id ON email_ingest_log (email_account_id, message_id);
ALTER TABLE email_ingest_log ENABLE ROW LEVEL SECURITY;
