-- The metrics' outbox gauges, read at every scrape: the oldest undelivered event is the first
-- entry of this index, and the backlog is counted in it, without walking delivered events.
CREATE INDEX outbox_undelivered ON outbox(seq) WHERE status = 'pending';
