-- Claim record for outbound sends: at most one provider call per message on an at-least-once queue.
-- state: claimed (a worker is calling the provider), sent, failed (permanent), unknown (outcome ambiguous:
-- needs reconciliation, never blindly re-sent), released (the attempt provably did not send; may be claimed again).
CREATE TABLE IF NOT EXISTS outbound_dispatch (
    message_id uuid PRIMARY KEY REFERENCES communication_messages(id) ON DELETE CASCADE,
    channel text NOT NULL DEFAULT 'WHATSAPP',
    state text NOT NULL CHECK (state IN ('claimed', 'sent', 'failed', 'unknown', 'released')),
    provider_sid text,
    attempts integer NOT NULL DEFAULT 0,
    claimed_by text,
    claimed_at timestamptz,
    claim_expires_at timestamptz,
    last_error text,
    provider_response jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_outbound_dispatch_provider_sid
    ON outbound_dispatch (channel, provider_sid) WHERE provider_sid IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_outbound_dispatch_state ON outbound_dispatch (state, claim_expires_at);
ALTER TABLE outbound_dispatch ENABLE ROW LEVEL SECURITY;
