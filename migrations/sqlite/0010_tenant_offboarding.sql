-- Offboarding (`tenant delete`): when the tenant was deleted; its tokens are revoked and its users
-- soft-deleted through the controller, then purged after the grace period.
ALTER TABLE tenants ADD COLUMN deleted_at TEXT;
