-- A transcription claim is owned by one delivery (owner = job id + a per-delivery token), so a second delivery
-- of the same job in progress is refused by the lease even when Redis lost the per-message mutex. A delivery
-- that stops with a retry gives its lease back here, so the retried copy can claim the row at once instead of
-- waiting for the lease to expire. Only the owner's lease is dropped; the row stays IN_PROGRESS (the job is
-- not finished) and keeps its attempts count.

CREATE OR REPLACE FUNCTION bx_release_transcription(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_owner text := p->>'owner';
    v_status text;
    v_meta jsonb;
    v_tr jsonb;
BEGIN
    SELECT transcription_status, bx__object(metadata) INTO v_status, v_meta
      FROM communication_messages WHERE id = v_msg FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'missing');
    ELSIF v_status = 'COMPLETED' THEN
        RETURN jsonb_build_object('outcome', 'already_completed');
    END IF;
    v_tr := bx__object(v_meta->'transcription');
    IF NOT v_tr ? 'workerLease' THEN
        RETURN jsonb_build_object('outcome', 'released');
    ELSIF bx__object(v_tr->'workerLease')->>'owner' IS DISTINCT FROM v_owner THEN
        RETURN jsonb_build_object('outcome', 'in_progress');
    END IF;
    UPDATE communication_messages
       SET metadata = v_meta || jsonb_build_object('transcription', v_tr - 'workerLease'),
           updated_at = now()
     WHERE id = v_msg;
    RETURN jsonb_build_object('outcome', 'released');
END $$;

SELECT bx__restrict_worker_functions();
