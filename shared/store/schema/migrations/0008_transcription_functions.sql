-- Transcription state on VOICE rows: IN_PROGRESS -> COMPLETED | FAILED. metadata is merged, never replaced:
-- results go under metadata.transcription; the call summary the webhook wrote to content is kept under
-- metadata.call.summary before content becomes the transcript.

CREATE OR REPLACE FUNCTION bx__object(p_value jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(p_value) = 'object' THEN p_value ELSE '{}'::jsonb END
$$;

CREATE OR REPLACE FUNCTION bx_start_transcription(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_owner text := p->>'owner';
    v_status text;
    v_meta jsonb;
    v_tr jsonb;
    v_lease jsonb;
BEGIN
    SELECT transcription_status, bx__object(metadata) INTO v_status, v_meta
      FROM communication_messages WHERE id = v_msg FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'missing');
    ELSIF v_status = 'COMPLETED' THEN
        RETURN jsonb_build_object('outcome', 'already_completed');
    END IF;
    v_tr := bx__object(v_meta->'transcription');
    v_lease := bx__object(v_tr->'workerLease');
    IF v_status = 'IN_PROGRESS' AND (v_lease->>'expiresAt')::timestamptz > now()
       AND v_lease->>'owner' IS DISTINCT FROM v_owner THEN
        RETURN jsonb_build_object('outcome', 'in_progress', 'lease_expires_at', v_lease->'expiresAt');
    END IF;
    v_tr := (v_tr - 'error' - 'failedAt') || jsonb_build_object(
        'attempts', coalesce((v_tr->>'attempts')::int, 0) + 1,
        'startedAt', now(),
        'workerLease', jsonb_build_object(
            'owner', v_owner,
            'expiresAt', now() + make_interval(secs => (p->>'lease_s')::double precision)));
    UPDATE communication_messages
       SET transcription_status = 'IN_PROGRESS', metadata = v_meta || jsonb_build_object('transcription', v_tr),
           updated_at = now()
     WHERE id = v_msg;
    RETURN jsonb_build_object('outcome', 'started', 'attempts', v_tr->'attempts');
END $$;

CREATE OR REPLACE FUNCTION bx_complete_transcription(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
    v_status text;
    v_content text;
    v_meta jsonb;
    v_tr jsonb;
    v_call jsonb;
BEGIN
    SELECT transcription_status, content, bx__object(metadata) INTO v_status, v_content, v_meta
      FROM communication_messages WHERE id = v_msg FOR UPDATE;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('outcome', 'missing');
    ELSIF v_status = 'COMPLETED' THEN
        RETURN jsonb_build_object('outcome', 'already_completed');
    END IF;
    v_tr := (bx__object(v_meta->'transcription') - 'workerLease' - 'error' - 'failedAt')
            || bx__object(p->'transcription')
            || jsonb_build_object('completedAt', now());
    v_call := bx__object(v_meta->'call');
    IF NOT v_call ? 'summary' AND coalesce(v_content, '') <> '' THEN
        v_call := v_call || jsonb_build_object('summary', v_content);
    END IF;
    UPDATE communication_messages
       SET content = coalesce(p->>'text', ''),
           transcription_status = 'COMPLETED',
           transcription_language = left(p->>'language', 10),
           transcription_confidence = (p->>'confidence')::numeric,
           metadata = v_meta || jsonb_build_object('transcription', v_tr, 'call', v_call),
           updated_at = now()
     WHERE id = v_msg;
    RETURN jsonb_build_object('outcome', 'completed');
END $$;

CREATE OR REPLACE FUNCTION bx_fail_transcription(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
    v_msg uuid := (p->>'message_id')::uuid;
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
    v_tr := (bx__object(v_meta->'transcription') - 'workerLease')
            || jsonb_build_object('error', p->>'error', 'failedAt', now());
    UPDATE communication_messages
       SET transcription_status = 'FAILED', metadata = v_meta || jsonb_build_object('transcription', v_tr),
           updated_at = now()
     WHERE id = v_msg;
    RETURN jsonb_build_object('outcome', 'failed');
END $$;
