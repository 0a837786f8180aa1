-- WhatsApp send claims (outbound_dispatch) and the message-row updates the original wrote.

CREATE OR REPLACE FUNCTION bx__dispatch_result(p_outcome text, p_row outbound_dispatch) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = public AS $$
    SELECT jsonb_build_object('outcome', p_outcome, 'state', p_row.state, 'attempts', p_row.attempts,
                              'provider_sid', p_row.provider_sid, 'last_error', p_row.last_error,
                              'claim_expires_at', p_row.claim_expires_at)
$$;

CREATE OR REPLACE FUNCTION bx_claim_send(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_expires timestamptz := now() + make_interval(secs => (p->>'claim_s')::double precision);
    v_row outbound_dispatch;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM communication_messages WHERE id = v_msg) THEN
        RETURN jsonb_build_object('outcome', 'missing');
    END IF;
    INSERT INTO outbound_dispatch (message_id, channel, state, attempts, claimed_by, claimed_at, claim_expires_at)
    VALUES (v_msg, coalesce(p->>'channel', 'WHATSAPP'), 'claimed', 1, p->>'owner', now(), v_expires)
    ON CONFLICT (message_id) DO NOTHING
    RETURNING * INTO v_row;
    IF FOUND THEN
        RETURN bx__dispatch_result('claimed', v_row);
    END IF;
    SELECT * INTO v_row FROM outbound_dispatch WHERE message_id = v_msg FOR UPDATE;
    IF v_row.state = 'released' THEN
        UPDATE outbound_dispatch
           SET state = 'claimed', attempts = attempts + 1, claimed_by = p->>'owner', claimed_at = now(),
               claim_expires_at = v_expires, updated_at = now()
         WHERE message_id = v_msg
        RETURNING * INTO v_row;
        RETURN bx__dispatch_result('claimed', v_row);
    ELSIF v_row.state = 'sent' THEN
        RETURN bx__dispatch_result('already_sent', v_row);
    ELSIF v_row.state = 'failed' THEN
        RETURN bx__dispatch_result('failed', v_row);
    ELSIF v_row.state = 'claimed' AND v_row.claim_expires_at > now() THEN
        RETURN bx__dispatch_result('in_progress', v_row);
    END IF;
    IF v_row.state = 'claimed' THEN
        -- The claimer crashed or timed out between claim and outcome: we cannot know whether the provider
        -- sent it, so it is never re-sent blindly.
        UPDATE outbound_dispatch
           SET state = 'unknown', updated_at = now(),
               last_error = coalesce(last_error, 'claim expired before the send outcome was recorded')
         WHERE message_id = v_msg
        RETURNING * INTO v_row;
    END IF;
    RETURN bx__dispatch_result('needs_reconciliation', v_row);
END $$;

CREATE OR REPLACE FUNCTION bx_complete_send(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_row outbound_dispatch;
BEGIN
    UPDATE outbound_dispatch
       SET state = 'sent', provider_sid = p->>'provider_sid', provider_response = p->'provider_response',
           last_error = NULL, claim_expires_at = NULL, updated_at = now()
     WHERE message_id = v_msg
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_claimed');
    END IF;
    UPDATE communication_messages
       SET status = CASE WHEN status IN ('DELIVERED', 'READ') THEN status ELSE 'SENT'::message_status END,
           external_id = left(p->>'provider_sid', 255), sent_at = now(),
           error_message = NULL, failed_at = NULL, updated_at = now()
     WHERE id = v_msg;
    RETURN bx__dispatch_result('sent', v_row);
END $$;

CREATE OR REPLACE FUNCTION bx_fail_send(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_row outbound_dispatch;
BEGIN
    SELECT * INTO v_row FROM outbound_dispatch WHERE message_id = v_msg FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_claimed');
    ELSIF v_row.state = 'sent' THEN
        RETURN bx__dispatch_result('already_sent', v_row);
    END IF;
    UPDATE outbound_dispatch
       SET state = 'failed', last_error = p->>'error',
           provider_response = coalesce(p->'provider_response', provider_response),
           claim_expires_at = NULL, updated_at = now()
     WHERE message_id = v_msg
    RETURNING * INTO v_row;
    UPDATE communication_messages
       SET status = 'FAILED', error_message = p->>'error', failed_at = now(), updated_at = now()
     WHERE id = v_msg;
    RETURN bx__dispatch_result('failed', v_row);
END $$;

CREATE OR REPLACE FUNCTION bx_release_send(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    -- The attempt provably did not reach the provider (429, refused connection): a later delivery may claim
    -- it again. The message row is not touched (the original wrote FAILED on intermediate attempts).
    UPDATE outbound_dispatch
       SET state = 'released', last_error = p->>'error', claim_expires_at = NULL, updated_at = now()
     WHERE message_id = (p->>'message_id')::uuid
       AND ((state = 'claimed' AND claimed_by = p->>'owner') OR (state = 'unknown' AND p->>'owner' IS NULL));
    RETURN to_jsonb(FOUND);
END $$;

CREATE OR REPLACE FUNCTION bx_mark_send_unknown(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    UPDATE outbound_dispatch
       SET state = 'unknown', last_error = p->>'error', claim_expires_at = NULL, updated_at = now()
     WHERE message_id = (p->>'message_id')::uuid AND state = 'claimed';
    RETURN to_jsonb(FOUND);
END $$;

CREATE OR REPLACE FUNCTION bx_list_sends_needing_reconciliation(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_result jsonb;
BEGIN
    UPDATE outbound_dispatch
       SET state = 'unknown', updated_at = now(),
           last_error = coalesce(last_error, 'claim expired before the send outcome was recorded')
     WHERE state = 'claimed' AND claim_expires_at <= now();
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'message_id', d.message_id, 'channel', d.channel, 'state', d.state,
               'provider_sid', d.provider_sid, 'attempts', d.attempts, 'claimed_at', d.claimed_at,
               'last_error', d.last_error) ORDER BY d.claimed_at, d.message_id), '[]'::jsonb)
      INTO v_result
      FROM (SELECT * FROM outbound_dispatch WHERE state = 'unknown'
             ORDER BY claimed_at, message_id LIMIT coalesce((p->>'limit')::int, 100)) d;
    RETURN v_result;
END $$;

CREATE OR REPLACE FUNCTION bx_apply_delivery_status(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_new text := p->>'status';
    v_at timestamptz := coalesce((p->>'at')::timestamptz, now());
    v_id uuid;
    v_cur text;
    v_rank_cur int;
    v_rank_new int;
BEGIN
    IF v_new NOT IN ('SENT', 'DELIVERED', 'READ', 'FAILED') THEN
        RAISE EXCEPTION 'unknown delivery status %', v_new USING ERRCODE = '22023';
    END IF;
    SELECT id, status::text INTO v_id, v_cur FROM communication_messages
     WHERE external_id = left(p->>'provider_sid', 255) FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_found');
    END IF;
    -- SENT < DELIVERED < READ. FAILED never overrides DELIVERED/READ; DELIVERED/READ (positive evidence)
    -- override FAILED; nothing moves backwards.
    v_rank_cur := CASE v_cur WHEN 'SENT' THEN 1 WHEN 'FAILED' THEN 1 WHEN 'DELIVERED' THEN 2
                             WHEN 'READ' THEN 3 ELSE 0 END;
    v_rank_new := CASE v_new WHEN 'SENT' THEN 1 WHEN 'DELIVERED' THEN 2 WHEN 'READ' THEN 3 ELSE 0 END;
    IF (v_new = 'FAILED' AND v_cur IN ('DELIVERED', 'READ', 'FAILED'))
       OR (v_new <> 'FAILED' AND v_rank_new <= v_rank_cur) THEN
        RETURN jsonb_build_object('outcome', 'stale', 'message_id', v_id, 'status', v_cur);
    END IF;
    UPDATE communication_messages
       SET status = v_new::message_status,
           delivered_at = CASE WHEN v_new IN ('DELIVERED', 'READ') THEN coalesce(delivered_at, v_at)
                               ELSE delivered_at END,
           read_at = CASE WHEN v_new = 'READ' THEN coalesce(read_at, v_at) ELSE read_at END,
           failed_at = CASE WHEN v_new = 'FAILED' THEN v_at ELSE NULL END,
           error_message = CASE WHEN v_new = 'FAILED' THEN p->>'reason' ELSE NULL END,
           updated_at = now()
     WHERE id = v_id;
    RETURN jsonb_build_object('outcome', 'applied', 'message_id', v_id, 'status', v_new);
END $$;

CREATE OR REPLACE FUNCTION bx_resolve_send(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
    CASE p->>'resolution'
        WHEN 'sent' THEN RETURN bx_complete_send(p);
        WHEN 'failed' THEN RETURN bx_fail_send(p);
        WHEN 'not_sent' THEN RETURN jsonb_build_object(
            'outcome', CASE WHEN bx_release_send(p - 'owner') = 'true'::jsonb THEN 'released' ELSE 'not_claimed' END);
        ELSE RAISE EXCEPTION 'unknown resolution %', p->>'resolution' USING ERRCODE = '22023';
    END CASE;
END $$;
