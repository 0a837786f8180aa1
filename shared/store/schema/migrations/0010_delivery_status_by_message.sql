-- Delivery reports that arrive before the send's outcome was recorded (Exotel can call back before our
-- complete_send committed the sid): applied by our message id, which Exotel echoes in custom_data.
--
-- outbound_dispatch remembers the latest report applied that way (callback_sid, callback_status), so that
-- complete_send, committing afterwards, keeps a FAILED the report already recorded instead of writing SENT
-- over it, and an operator reconciling an unknown send sees Exotel's sid and status.
ALTER TABLE outbound_dispatch ADD COLUMN IF NOT EXISTS callback_sid text;
ALTER TABLE outbound_dispatch ADD COLUMN IF NOT EXISTS callback_status text;

CREATE OR REPLACE FUNCTION bx_apply_delivery_status_by_message(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_new text := p->>'status';
    v_sid text := left(p->>'provider_sid', 255);
    v_at timestamptz := coalesce((p->>'at')::timestamptz, now());
    v_id uuid := (p->>'message_id')::uuid;
    v_cur text;
    v_external text;
    v_rank_cur int;
    v_rank_new int;
BEGIN
    IF v_new NOT IN ('SENT', 'DELIVERED', 'READ', 'FAILED') THEN
        RAISE EXCEPTION 'unknown delivery status %', v_new USING ERRCODE = '22023';
    END IF;
    -- Lock order as in bx_complete_send (dispatch row, then message row), so the two never deadlock.
    PERFORM 1 FROM outbound_dispatch WHERE message_id = v_id FOR UPDATE;
    SELECT status::text, external_id INTO v_cur, v_external FROM communication_messages
     WHERE id = v_id AND channel = 'WHATSAPP' AND direction = 'OUTBOUND' FOR UPDATE;
    -- Unknown message, or one whose recorded send has another sid (this report is about a different send).
    IF NOT FOUND OR (v_external IS NOT NULL AND v_sid IS NOT NULL AND v_external <> v_sid) THEN
        RETURN jsonb_build_object('outcome', 'not_found');
    END IF;
    -- The same order as bx_apply_delivery_status: SENT < DELIVERED < READ; FAILED never overrides
    -- DELIVERED/READ; DELIVERED/READ override FAILED; nothing moves backwards. A PENDING row (the send is
    -- still being recorded) takes any report.
    v_rank_cur := CASE v_cur WHEN 'SENT' THEN 1 WHEN 'FAILED' THEN 1 WHEN 'DELIVERED' THEN 2
                             WHEN 'READ' THEN 3 ELSE 0 END;
    v_rank_new := CASE v_new WHEN 'SENT' THEN 1 WHEN 'DELIVERED' THEN 2 WHEN 'READ' THEN 3 ELSE 0 END;
    IF (v_new = 'FAILED' AND v_cur IN ('DELIVERED', 'READ', 'FAILED'))
       OR (v_new <> 'FAILED' AND v_rank_new <= v_rank_cur) THEN
        RETURN jsonb_build_object('outcome', 'stale', 'message_id', v_id, 'status', v_cur);
    END IF;
    UPDATE communication_messages
       SET status = v_new::message_status,
           external_id = coalesce(external_id, v_sid),
           delivered_at = CASE WHEN v_new IN ('DELIVERED', 'READ') THEN coalesce(delivered_at, v_at)
                               ELSE delivered_at END,
           read_at = CASE WHEN v_new = 'READ' THEN coalesce(read_at, v_at) ELSE read_at END,
           failed_at = CASE WHEN v_new = 'FAILED' THEN v_at ELSE NULL END,
           error_message = CASE WHEN v_new = 'FAILED' THEN p->>'reason' ELSE NULL END,
           updated_at = now()
     WHERE id = v_id;
    UPDATE outbound_dispatch
       SET callback_sid = coalesce(v_sid, callback_sid), callback_status = v_new, updated_at = now()
     WHERE message_id = v_id;
    RETURN jsonb_build_object('outcome', 'applied', 'message_id', v_id, 'status', v_new);
END $$;

-- As in 0007, except that a FAILED recorded by an early delivery report (callback_status) is kept.
CREATE OR REPLACE FUNCTION bx_complete_send(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_row outbound_dispatch;
    v_keep_failed boolean;
BEGIN
    UPDATE outbound_dispatch
       SET state = 'sent', provider_sid = p->>'provider_sid', provider_response = p->'provider_response',
           last_error = NULL, claim_expires_at = NULL, updated_at = now()
     WHERE message_id = v_msg
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'not_claimed');
    END IF;
    v_keep_failed := v_row.callback_status IS NOT DISTINCT FROM 'FAILED';
    UPDATE communication_messages
       SET status = CASE WHEN status IN ('DELIVERED', 'READ') THEN status
                         WHEN status = 'FAILED' AND v_keep_failed THEN status
                         ELSE 'SENT'::message_status END,
           external_id = left(p->>'provider_sid', 255), sent_at = now(),
           error_message = CASE WHEN status = 'FAILED' AND v_keep_failed THEN error_message END,
           failed_at = CASE WHEN status = 'FAILED' AND v_keep_failed THEN failed_at END,
           updated_at = now()
     WHERE id = v_msg;
    RETURN bx__dispatch_result('sent', v_row);
END $$;

-- Workers only (0009).
SELECT bx__restrict_worker_functions();
