-- Moonborn's actual state (written only by the controller, plus the admin API's hand edits that
-- simulate the app), the controller's bookkeeping, the outbox and the audit trail.
CREATE TABLE controller_state (
    tenant_id BIGINT PRIMARY KEY REFERENCES tenants(id),
    default_role TEXT,
    bindings_set BIGINT NOT NULL DEFAULT 0,
    safety_percent BIGINT NOT NULL DEFAULT 20,
    safety_min_users BIGINT NOT NULL DEFAULT 10,
    held_fingerprint TEXT,
    held_reason TEXT,
    held_at TEXT,
    -- An operator released the hold: the next run applies its destructive changes too.
    hold_released BIGINT NOT NULL DEFAULT 0,
    applied_journal_seq BIGINT NOT NULL DEFAULT 0,
    last_full_run_at TEXT
);

CREATE TABLE group_bindings (
    tenant_id BIGINT NOT NULL,
    group_name TEXT NOT NULL,
    group_name_lc TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (tenant_id, group_name_lc, role)
);

CREATE TABLE users (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    email TEXT NOT NULL,
    email_lc TEXT NOT NULL,
    display_name TEXT,
    contact_email TEXT,
    status TEXT NOT NULL,
    managed_by TEXT NOT NULL,
    scim_id TEXT,
    external_id TEXT,
    purge_after TEXT,
    version BIGINT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, id)
);
CREATE UNIQUE INDEX users_email ON users(tenant_id, email_lc) WHERE status <> 'purged';
CREATE UNIQUE INDEX users_scim_id ON users(tenant_id, scim_id) WHERE scim_id IS NOT NULL;
CREATE INDEX users_external_id ON users(tenant_id, external_id);
CREATE INDEX users_purge ON users(tenant_id, status, purge_after);

CREATE TABLE user_roles (
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, role)
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX sessions_user ON sessions(tenant_id, user_id);

-- Never touched by the controller; present so tests can prove it.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE preferences (
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, key)
);
CREATE TABLE workspace_memberships (
    tenant_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    workspace TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, workspace)
);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant_id BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX outbox_pending ON outbox(status, next_attempt_at);
CREATE INDEX outbox_tenant ON outbox(tenant_id, seq);

CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL,
    run_id TEXT,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    user_id TEXT,
    before TEXT,
    after TEXT,
    at TEXT NOT NULL
);
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, seq);
CREATE INDEX audit_log_recent ON audit_log(tenant_id, at);

CREATE TABLE runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    tenant_id BIGINT NOT NULL,
    trigger TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    summary TEXT,
    fingerprint TEXT,
    error TEXT
);
CREATE INDEX runs_tenant ON runs(tenant_id, seq);

-- One reconcile per tenant at a time, across processes: a lease with an expiry and a fencing
-- token (bumped on every acquisition).
CREATE TABLE controller_leases (
    tenant_id BIGINT PRIMARY KEY,
    holder TEXT NOT NULL,
    fence BIGINT NOT NULL,
    expires_at TEXT NOT NULL
);
