-- Columns the original code writes or reads on communication_messages but no repo migration created
-- (banxway-original.md §2, §7.2). They may already exist on the live database: IF NOT EXISTS keeps this safe.
ALTER TABLE communication_messages ADD COLUMN IF NOT EXISTS metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE communication_messages ADD COLUMN IF NOT EXISTS error_message text;
ALTER TABLE communication_messages ADD COLUMN IF NOT EXISTS failed_at timestamptz;
ALTER TABLE communication_messages ADD COLUMN IF NOT EXISTS updated_at timestamptz DEFAULT now();
ALTER TABLE communication_messages ADD COLUMN IF NOT EXISTS deleted_at timestamptz;
CREATE INDEX IF NOT EXISTS idx_messages_email_account_created
    ON communication_messages (email_account_id, created_at DESC);
