-- Outbox delivery in order per user: a claim is a lease of its own (`claimed_until`) instead of
-- pushing `next_attempt_at` ahead, and a user's pending events are found by their position.
ALTER TABLE outbox ADD COLUMN claimed_until TEXT;
CREATE INDEX outbox_user_pending ON outbox(tenant_id, user_id, seq) WHERE status = 'pending';
