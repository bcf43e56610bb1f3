-- The safety valve, per tenant: on/off, how long a burst of destructive pushes may keep growing
-- before it is judged (settle: quiet time since the last one; max_wait: since the first), and the
-- burst waiting now (when it started, its last destructive push, and the journal position after
-- which its pushes lie, so the judgement re-plans exactly what they named).
ALTER TABLE controller_state ADD COLUMN safety_enabled BIGINT NOT NULL DEFAULT 1;
ALTER TABLE controller_state ADD COLUMN safety_settle_ms BIGINT NOT NULL DEFAULT 10000;
ALTER TABLE controller_state ADD COLUMN safety_max_wait_ms BIGINT NOT NULL DEFAULT 120000;
ALTER TABLE controller_state ADD COLUMN burst_first_at TEXT;
ALTER TABLE controller_state ADD COLUMN burst_last_at TEXT;
ALTER TABLE controller_state ADD COLUMN burst_from_seq BIGINT NOT NULL DEFAULT 0;
-- How many destructive changes the hold keeps back (the hold's counts, for status and metrics).
ALTER TABLE controller_state ADD COLUMN held_count BIGINT NOT NULL DEFAULT 0;
