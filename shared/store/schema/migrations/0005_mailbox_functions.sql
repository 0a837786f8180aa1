-- Mailbox lease, checkpoint and account listing for the email poller. Every bx_* function takes one jsonb
-- argument "p" and returns jsonb, so the Postgres backend (SELECT bx_x(%s)) and the Supabase backend
-- (POST /rest/v1/rpc/bx_x {"p": ...}) call exactly the same code in one transaction.

CREATE OR REPLACE FUNCTION bx_list_pollable_accounts(p jsonb) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = public AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', a.id, 'name', a.name, 'email', a.email,
               'poll_interval_ms', a.poll_interval_ms, 'last_polled_at', a.last_polled_at,
               'last_poll_status', a.last_poll_status, 'lease_expires_at', s.lease_expires_at,
               'leased', s.lease_expires_at IS NOT NULL AND s.lease_expires_at > now())
             ORDER BY a.name, a.id), '[]'::jsonb)
      FROM email_accounts a
      LEFT JOIN email_sync_state s
        ON s.email_account_id = a.id AND s.mailbox = coalesce(p->>'mailbox', 'INBOX')
     WHERE a.is_active AND a.imap_enabled
$$;

CREATE OR REPLACE FUNCTION bx_claim_mailbox(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_account uuid := (p->>'account_id')::uuid;
    v_mailbox text := coalesce(p->>'mailbox', 'INBOX');
    v_owner text := p->>'owner';
    v_row email_sync_state;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM email_accounts WHERE id = v_account) THEN
        RETURN jsonb_build_object('outcome', 'missing');
    END IF;
    INSERT INTO email_sync_state (email_account_id, mailbox) VALUES (v_account, v_mailbox)
    ON CONFLICT DO NOTHING;
    -- Under READ COMMITTED a concurrent claimer blocks on the row and then re-checks the condition, so
    -- exactly one of them wins.
    UPDATE email_sync_state
       SET lease_owner = v_owner,
           lease_expires_at = now() + make_interval(secs => (p->>'lease_s')::double precision),
           last_run_started_at = now(), updated_at = now()
     WHERE email_account_id = v_account AND mailbox = v_mailbox
       AND (lease_expires_at IS NULL OR lease_expires_at <= now() OR lease_owner = v_owner)
    RETURNING * INTO v_row;
    IF FOUND THEN
        RETURN jsonb_build_object('outcome', 'claimed', 'state', to_jsonb(v_row));
    END IF;
    SELECT * INTO v_row FROM email_sync_state WHERE email_account_id = v_account AND mailbox = v_mailbox;
    RETURN jsonb_build_object('outcome', 'held', 'state', to_jsonb(v_row));
END $$;

CREATE OR REPLACE FUNCTION bx_renew_mailbox_lease(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    UPDATE email_sync_state
       SET lease_expires_at = now() + make_interval(secs => (p->>'lease_s')::double precision), updated_at = now()
     WHERE email_account_id = (p->>'account_id')::uuid AND mailbox = coalesce(p->>'mailbox', 'INBOX')
       AND lease_owner = p->>'owner';
    RETURN to_jsonb(FOUND);
END $$;

CREATE OR REPLACE FUNCTION bx_release_mailbox(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_error text := p->>'error';
BEGIN
    UPDATE email_sync_state
       SET lease_owner = NULL, lease_expires_at = NULL, last_run_finished_at = now(), updated_at = now(),
           last_success_at = CASE WHEN v_error IS NULL THEN now() ELSE last_success_at END,
           consecutive_failures = CASE WHEN v_error IS NULL THEN 0 ELSE consecutive_failures + 1 END,
           last_error = v_error
     WHERE email_account_id = (p->>'account_id')::uuid AND mailbox = coalesce(p->>'mailbox', 'INBOX')
       AND lease_owner = p->>'owner';
    RETURN to_jsonb(FOUND);
END $$;

CREATE OR REPLACE FUNCTION bx_advance_checkpoint(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_uidvalidity bigint := (p->>'uidvalidity')::bigint;
    v_last_uid bigint := (p->>'last_uid')::bigint;
BEGIN
    -- Only the lease holder moves the checkpoint; within one UIDVALIDITY it never moves backwards.
    UPDATE email_sync_state
       SET last_uid = CASE WHEN uidvalidity IS DISTINCT FROM v_uidvalidity THEN v_last_uid
                           ELSE greatest(last_uid, v_last_uid) END,
           uidvalidity = v_uidvalidity,
           highest_modseq = coalesce((p->>'highest_modseq')::bigint, highest_modseq),
           updated_at = now()
     WHERE email_account_id = (p->>'account_id')::uuid AND mailbox = coalesce(p->>'mailbox', 'INBOX')
       AND lease_owner = p->>'owner';
    RETURN to_jsonb(FOUND);
END $$;

CREATE OR REPLACE FUNCTION bx_record_email_failure(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_row email_ingest_log;
BEGIN
    INSERT INTO email_ingest_log AS l (email_account_id, mailbox, uidvalidity, uid, message_id, raw_sha256,
                                       status, attempts, last_error)
    VALUES ((p->>'account_id')::uuid, p->>'mailbox', (p->>'uidvalidity')::bigint, (p->>'uid')::bigint,
            p->>'message_id', p->>'raw_sha256', p->>'status', 1, p->>'reason')
    ON CONFLICT (email_account_id, mailbox, uidvalidity, uid) DO UPDATE
       SET status = CASE WHEN l.status IN ('stored', 'duplicate') THEN l.status ELSE excluded.status END,
           message_id = coalesce(excluded.message_id, l.message_id),
           raw_sha256 = coalesce(excluded.raw_sha256, l.raw_sha256),
           attempts = l.attempts + 1, last_error = excluded.last_error, updated_at = now()
    RETURNING * INTO v_row;
    RETURN jsonb_build_object('status', v_row.status, 'attempts', v_row.attempts);
END $$;
