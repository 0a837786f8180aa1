-- Store one inbound email in one transaction: customer, thread, message, thread counters and the
-- per-mailbox ingest record. A crash or a conflict rolls all of it back, so no orphan thread or customer.
CREATE OR REPLACE FUNCTION bx_record_inbound_email(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_account uuid := (p->>'account_id')::uuid;
    v_message_id text := left(p->>'message_id', 255);
    v_from text := left(coalesce(p->>'from_address', ''), 255);
    v_from_name text := left(p->>'from_name', 255);
    v_subject text := left(p->>'subject', 500);
    v_in_reply_to text := left(nullif(p->>'in_reply_to', ''), 255);
    v_acc email_accounts;
    v_customer uuid;
    v_thread uuid;
    v_thread_customer uuid;
    v_new_thread boolean := false;
    v_msg uuid;
    v_status text;
    v_token text;
    v_ref text;
BEGIN
    IF coalesce(v_message_id, '') = '' THEN
        RAISE EXCEPTION 'message_id is required (synthesise one when the header is missing)'
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO v_acc FROM email_accounts WHERE id = v_account;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'email account % does not exist', v_account USING ERRCODE = 'P0002';
    END IF;

    -- One ingest per Message-ID at a time, across mailboxes, accounts and instances.
    PERFORM pg_advisory_xact_lock(hashtextextended('bx_email:' || v_message_id, 0));
    SELECT id, thread_id INTO v_msg, v_thread FROM communication_messages WHERE external_id = v_message_id;
    IF FOUND THEN
        v_status := 'duplicate';
    ELSE
        -- Sender -> customer, matched case-insensitively; created when unknown. No customer for an empty From.
        IF v_from <> '' THEN
            PERFORM pg_advisory_xact_lock(hashtextextended('bx_customer:' || lower(v_from), 0));
            SELECT id INTO v_customer FROM customers WHERE lower(email) = lower(v_from)
             ORDER BY created_at, id LIMIT 1;
            IF v_customer IS NULL THEN
                INSERT INTO customers (name, email, tier)
                VALUES (left(coalesce(nullif(v_from_name, ''), v_from), 255), v_from, 'NEW')
                ON CONFLICT DO NOTHING
                RETURNING id INTO v_customer;
                IF v_customer IS NULL THEN
                    SELECT id INTO v_customer FROM customers WHERE email = v_from;
                END IF;
            END IF;
        END IF;

        -- Thread: reference token in the subject (same format as the original; never widened), accepted only
        -- for the sender's own thread (an old or quoted token must not leak mail into another customer's
        -- thread); then In-Reply-To; then References, newest first; else a new thread.
        v_token := substring(coalesce(v_subject, '') from 'BX-[0-9]{4}-[0-9]{4}');
        IF v_token IS NOT NULL THEN
            SELECT id, customer_id INTO v_thread, v_thread_customer
              FROM communication_threads WHERE reference = v_token;
            IF v_thread IS NOT NULL AND v_thread_customer IS NOT NULL
               AND v_thread_customer IS DISTINCT FROM v_customer THEN
                v_thread := NULL;
            END IF;
        END IF;
        IF v_thread IS NULL AND v_in_reply_to IS NOT NULL THEN
            SELECT thread_id INTO v_thread FROM communication_messages WHERE external_id = v_in_reply_to;
        END IF;
        IF v_thread IS NULL AND jsonb_typeof(p->'references') = 'array' THEN
            SELECT m.thread_id INTO v_thread
              FROM jsonb_array_elements_text(p->'references') WITH ORDINALITY AS r(ref, pos)
              JOIN communication_messages m ON m.external_id = left(r.ref, 255)
             ORDER BY r.pos DESC
             LIMIT 1;
        END IF;
        IF v_thread IS NULL THEN
            FOR i IN 1..100 LOOP
                v_ref := 'BX-' || to_char(now(), 'YYYY') || '-' || (1000 + floor(random() * 9000))::int::text;
                CONTINUE WHEN EXISTS (SELECT 1 FROM communication_threads WHERE reference = v_ref);
                BEGIN
                    INSERT INTO communication_threads (reference, type, priority, customer_id, primary_channel,
                                                       channels, tags, assigned_to, tat_started_at,
                                                       email_account_id)
                    VALUES (v_ref, 'QUERY', 'MEDIUM', v_customer, 'EMAIL', '["EMAIL"]'::jsonb,
                            v_acc.default_tags, v_acc.auto_assign_to, now(), v_account)
                    RETURNING id INTO v_thread;
                    EXIT;
                EXCEPTION WHEN unique_violation THEN
                    NULL;  -- a concurrent thread took this reference; draw another
                END;
            END LOOP;
            IF v_thread IS NULL THEN
                RAISE EXCEPTION 'no free thread reference left this year' USING ERRCODE = '23505';
            END IF;
            v_new_thread := true;
        END IF;

        INSERT INTO communication_messages (thread_id, channel, direction, status, content, html_content, subject,
                                            from_address, from_name, to_addresses, cc_addresses, external_id,
                                            external_thread_id, attachments, email_account_id, sent_at)
        VALUES (v_thread, 'EMAIL', 'INBOUND', 'DELIVERED', coalesce(p->>'content', ''), p->>'html_content',
                v_subject, nullif(v_from, ''), v_from_name,
                coalesce(p->'to_addresses', '[]'::jsonb), coalesce(p->'cc_addresses', '[]'::jsonb),
                v_message_id, v_in_reply_to, coalesce(p->'attachments', '[]'::jsonb), v_account,
                coalesce((p->>'sent_at')::timestamptz, now()))
        RETURNING id INTO v_msg;
        PERFORM increment_thread_message_count(v_thread, true);
        v_status := 'stored';
    END IF;

    INSERT INTO email_ingest_log AS l (email_account_id, mailbox, uidvalidity, uid, message_id, raw_sha256,
                                       status, communication_message_id, attempts)
    VALUES (v_account, p->>'mailbox', (p->>'uidvalidity')::bigint, (p->>'uid')::bigint, v_message_id,
            p->>'raw_sha256', v_status, v_msg, 1)
    ON CONFLICT (email_account_id, mailbox, uidvalidity, uid) DO UPDATE
       SET status = CASE WHEN l.status = 'stored' THEN 'stored' ELSE excluded.status END,
           communication_message_id = coalesce(excluded.communication_message_id, l.communication_message_id),
           message_id = excluded.message_id,
           raw_sha256 = coalesce(excluded.raw_sha256, l.raw_sha256),
           attempts = l.attempts + 1, last_error = NULL, updated_at = now();

    RETURN jsonb_build_object('created', v_status = 'stored', 'status', v_status, 'message_row_id', v_msg,
                              'thread_id', v_thread, 'customer_id', v_customer, 'new_thread', v_new_thread);
END $$;
