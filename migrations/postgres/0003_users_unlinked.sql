-- SCIM-managed users linked to no SCIM id (not made by the controller; normally none): the full
-- run reads them here, since its merge of the desired and actual state walks SCIM-id ranges.
CREATE INDEX users_scim_unlinked ON users(tenant_id, id)
    WHERE scim_id IS NULL AND managed_by = 'scim' AND status <> 'purged';
