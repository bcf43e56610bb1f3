-- Named operators (people who act through the console or the admin API) and their console
-- sessions. A token is stored only as its SHA-256; `tenant_id` set scopes the operator to one
-- tenant (that tenant's admin). A session row is keyed by the SHA-256 of its cookie.
CREATE TABLE operators (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    tenant_id BIGINT REFERENCES tenants(id),
    prefix TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);

CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL REFERENCES operators(id),
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- A SCIM token may carry a name (which IdP connection it is for), shown in token lists.
ALTER TABLE scim_tokens ADD COLUMN name TEXT;
