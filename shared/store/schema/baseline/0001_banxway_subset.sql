-- Baseline for LOCAL RUNS AND TESTS ONLY: the subset of Banxway's original schema that the workers touch
-- (banxway-original.md §2), as the repo migrations create it. Production never applies this file; the live
-- database already has these objects. Idempotent so it can be re-applied.

CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$ BEGIN
    CREATE TYPE channel_type AS ENUM ('EMAIL', 'WHATSAPP', 'WECHAT', 'SMS', 'VOICE', 'PORTAL', 'SLACK', 'TEAMS');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE message_direction AS ENUM ('INBOUND', 'OUTBOUND');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE message_status AS ENUM ('DRAFT', 'PENDING', 'SENT', 'DELIVERED', 'READ', 'FAILED');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE thread_status AS ENUM (
        'NEW', 'IN_PROGRESS', 'AWAITING_CLIENT', 'AWAITING_INTERNAL', 'RESOLVED', 'CLOSED', 'CANCELLED');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE priority_level AS ENUM ('LOW', 'MEDIUM', 'HIGH', 'URGENT', 'CRITICAL');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE customer_tier AS ENUM ('PREMIUM', 'STANDARD', 'BASIC', 'NEW');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    email varchar(255) UNIQUE NOT NULL,
    full_name varchar(255),
    created_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS customers (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name varchar(255) NOT NULL,
    company varchar(255),
    email varchar(255) UNIQUE,
    phone varchar(50),
    tier customer_tier DEFAULT 'STANDARD',
    preferred_channel channel_type,
    communication_preferences jsonb,
    tags text[],
    notes text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS email_accounts (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    name varchar(255) NOT NULL,
    email varchar(255) UNIQUE NOT NULL,
    smtp_host varchar(255) DEFAULT 'smtp.zoho.com',
    smtp_port integer DEFAULT 587,
    smtp_user varchar(255) NOT NULL,
    smtp_pass_encrypted text NOT NULL,
    smtp_secure boolean DEFAULT false,
    smtp_enabled boolean DEFAULT true,
    imap_host varchar(255) DEFAULT 'imap.zoho.com',
    imap_port integer DEFAULT 993,
    imap_user varchar(255) NOT NULL,
    imap_pass_encrypted text NOT NULL,
    imap_tls boolean DEFAULT true,
    imap_enabled boolean DEFAULT true,
    poll_interval_ms integer DEFAULT 30000,
    last_polled_at timestamptz,
    last_poll_status varchar(50),
    last_poll_error text,
    signature_html text,
    signature_text text,
    is_default boolean DEFAULT false,
    is_active boolean DEFAULT true,
    auto_assign_to uuid REFERENCES users(id),
    default_tags text[] DEFAULT '{}',
    created_by uuid REFERENCES users(id),
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_email_accounts_one_default ON email_accounts (is_default) WHERE is_default;

CREATE TABLE IF NOT EXISTS communication_threads (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    reference varchar(50) UNIQUE NOT NULL,
    type varchar(50) NOT NULL,
    status thread_status DEFAULT 'NEW',
    priority priority_level DEFAULT 'MEDIUM',
    customer_id uuid REFERENCES customers(id),
    primary_channel channel_type NOT NULL,
    channels jsonb NOT NULL DEFAULT '[]',
    tags text[],
    starred boolean DEFAULT false,
    pinned boolean DEFAULT false,
    archived boolean DEFAULT false,
    assigned_to uuid REFERENCES users(id),
    followers uuid[],
    tat_started_at timestamptz,
    email_account_id uuid REFERENCES email_accounts(id),
    message_count integer DEFAULT 0,
    unread_count integer DEFAULT 0,
    last_message_preview text,
    created_at timestamptz DEFAULT now(),
    updated_at timestamptz DEFAULT now(),
    last_activity_at timestamptz DEFAULT now(),
    last_message_at timestamptz,
    resolved_at timestamptz,
    closed_at timestamptz
);

CREATE TABLE IF NOT EXISTS communication_messages (
    id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
    thread_id uuid NOT NULL REFERENCES communication_threads(id) ON DELETE CASCADE,
    channel channel_type NOT NULL,
    direction message_direction NOT NULL,
    status message_status DEFAULT 'SENT',
    content text NOT NULL,
    html_content text,
    subject varchar(500),
    from_address varchar(255),
    from_name varchar(255),
    to_addresses jsonb DEFAULT '[]',
    cc_addresses jsonb DEFAULT '[]',
    external_id varchar(255),
    external_thread_id varchar(255),
    sentiment varchar(50),
    intent varchar(100),
    confidence_score numeric(3, 2),
    extracted_data jsonb,
    ai_summary text,
    key_points text[],
    attachments jsonb DEFAULT '[]',
    sent_at timestamptz DEFAULT now(),
    delivered_at timestamptz,
    read_at timestamptz,
    created_at timestamptz DEFAULT now(),
    reply_to_id uuid REFERENCES communication_messages(id),
    transcription_status varchar(50) DEFAULT 'PENDING',
    transcription_language varchar(10),
    transcription_confidence numeric(3, 2),
    email_account_id uuid REFERENCES email_accounts(id),
    sent_by uuid REFERENCES users(id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_messages_external_unique
    ON communication_messages (external_id) WHERE external_id IS NOT NULL;
DO $$ BEGIN
    ALTER TABLE communication_messages ADD CONSTRAINT unique_external_id UNIQUE (external_id);
EXCEPTION WHEN duplicate_object OR duplicate_table THEN NULL; END $$;
CREATE INDEX IF NOT EXISTS idx_messages_thread_created ON communication_messages (thread_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_messages_email_account ON communication_messages (email_account_id);

-- Triggers that matter to the workers: thread activity and preview after a message insert.
CREATE OR REPLACE FUNCTION update_thread_last_activity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communication_threads SET last_activity_at = now(), last_message_at = now()
     WHERE id = NEW.thread_id;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS update_thread_activity_on_message ON communication_messages;
CREATE TRIGGER update_thread_activity_on_message AFTER INSERT ON communication_messages
    FOR EACH ROW EXECUTE FUNCTION update_thread_last_activity();

CREATE OR REPLACE FUNCTION update_thread_preview() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communication_threads SET last_message_preview = left(NEW.content, 200) WHERE id = NEW.thread_id;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS trigger_update_thread_preview ON communication_messages;
CREATE TRIGGER trigger_update_thread_preview AFTER INSERT ON communication_messages
    FOR EACH ROW EXECUTE FUNCTION update_thread_preview();

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS update_email_accounts_updated_at ON email_accounts;
CREATE TRIGGER update_email_accounts_updated_at BEFORE UPDATE ON email_accounts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
DROP TRIGGER IF EXISTS update_threads_updated_at ON communication_threads;
CREATE TRIGGER update_threads_updated_at BEFORE UPDATE ON communication_threads
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE OR REPLACE FUNCTION increment_thread_message_count(p_thread_id uuid, p_is_inbound boolean DEFAULT true)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    UPDATE communication_threads
       SET message_count = COALESCE(message_count, 0) + 1,
           unread_count = CASE WHEN p_is_inbound THEN COALESCE(unread_count, 0) + 1 ELSE unread_count END,
           last_message_at = now(),
           last_activity_at = now()
     WHERE id = p_thread_id;
END $$;

-- The 2-argument forms (pgcrypto, base64 of the PGP message). The live database also has key defaults and a
-- legacy 1-argument overload; the workers always call the 2-argument form with an explicit key.
CREATE OR REPLACE FUNCTION encrypt_email_password(password text, key text) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT encode(pgp_sym_encrypt(password, key), 'base64')
$$;
CREATE OR REPLACE FUNCTION decrypt_email_password(encrypted text, key text) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT pgp_sym_decrypt(decode(encrypted, 'base64'), key)
$$;

ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE communication_threads ENABLE ROW LEVEL SECURITY;
ALTER TABLE communication_messages ENABLE ROW LEVEL SECURITY;
