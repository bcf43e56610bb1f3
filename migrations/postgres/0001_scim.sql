-- Tenants, SCIM tokens and the SCIM desired state (users, groups, members, intent journal).
CREATE TABLE tenants (
    id BIGSERIAL PRIMARY KEY,
    slug TEXT NOT NULL UNIQUE,
    tier TEXT NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

CREATE TABLE scim_tokens (
    id TEXT PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX scim_tokens_tenant ON scim_tokens(tenant_id);

CREATE TABLE scim_users (
    seq BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    user_name_lc TEXT NOT NULL,
    external_id TEXT,
    display_name TEXT,
    active BIGINT NOT NULL,
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, user_name_lc)
);
CREATE INDEX scim_users_external_id ON scim_users(tenant_id, external_id);
CREATE INDEX scim_users_updated ON scim_users(tenant_id, updated_at);

CREATE TABLE scim_user_emails (
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    value_lc TEXT NOT NULL,
    PRIMARY KEY (tenant_id, value_lc, user_id)
);
CREATE INDEX scim_user_emails_user ON scim_user_emails(tenant_id, user_id);

CREATE TABLE scim_groups (
    seq BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    display_name_lc TEXT NOT NULL,
    external_id TEXT,
    doc TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, id),
    UNIQUE (tenant_id, display_name_lc)
);
CREATE INDEX scim_groups_external_id ON scim_groups(tenant_id, external_id);

CREATE TABLE scim_group_members (
    tenant_id BIGINT NOT NULL,
    group_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    member_type TEXT NOT NULL,
    display TEXT,
    PRIMARY KEY (tenant_id, group_id, member_id)
);
CREATE INDEX scim_group_members_member ON scim_group_members(tenant_id, member_id, group_id);

CREATE TABLE intent_journal (
    seq BIGSERIAL PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    op TEXT NOT NULL,
    at TEXT NOT NULL,
    request_id TEXT NOT NULL
);
CREATE INDEX intent_journal_tenant ON intent_journal(tenant_id, seq);
