-- Group memberships and user emails are small rows found only by their keys, so they are stored
-- clustered by their primary key (WITHOUT ROWID): one B-tree for the row and its key instead of a
-- rowid table plus the key's index. Every member added or email written costs one B-tree insert
-- less (two instead of three with the secondary index), and a key lookup one descent less.
-- Same columns, keys and indexes as before; SQLite only (PostgreSQL stores them as it did).
-- Copied in key order, so the new trees are filled left to right and packed. Dropping the old
-- tables drops their ANALYZE statistics (the service never gathers any itself).
CREATE TABLE scim_group_members_clustered (
    tenant_id BIGINT NOT NULL,
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL,
    display TEXT,
    PRIMARY KEY (tenant_id, group_id, member_id)
) WITHOUT ROWID;
INSERT INTO scim_group_members_clustered (tenant_id, group_id, member_id, member_type, display)
    SELECT tenant_id, group_id, member_id, member_type, display FROM scim_group_members
    ORDER BY tenant_id, group_id, member_id;
DROP TABLE scim_group_members;
ALTER TABLE scim_group_members_clustered RENAME TO scim_group_members;
CREATE INDEX scim_group_members_member ON scim_group_members(tenant_id, member_id, group_id);

CREATE TABLE scim_user_emails_clustered (
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    value_lc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, value_lc, user_id)
) WITHOUT ROWID;
INSERT INTO scim_user_emails_clustered (tenant_id, user_id, value_lc)
    SELECT tenant_id, user_id, value_lc FROM scim_user_emails
    ORDER BY tenant_id, value_lc, user_id;
DROP TABLE scim_user_emails;
ALTER TABLE scim_user_emails_clustered RENAME TO scim_user_emails;
CREATE INDEX scim_user_emails_user ON scim_user_emails(tenant_id, user_id);
