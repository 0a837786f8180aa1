-- Per account+mailbox IMAP checkpoint (UIDVALIDITY, last UID) and poller lease (one poller per mailbox).
CREATE TABLE IF NOT EXISTS email_sync_state (
    email_account_id uuid NOT NULL REFERENCES email_accounts(id) ON DELETE CASCADE,
    mailbox text NOT NULL DEFAULT 'INBOX',
    uidvalidity bigint,
    last_uid bigint NOT NULL DEFAULT 0,
    highest_modseq bigint,
    last_run_started_at timestamptz,
    last_run_finished_at timestamptz,
    last_success_at timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error text,
    lease_owner text,
    lease_expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (email_account_id, mailbox)
);
ALTER TABLE email_sync_state ENABLE ROW LEVEL SECURITY;
