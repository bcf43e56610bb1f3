-- Secrets the service generates for itself, shared by every process on the database: the key
-- that signs list cursors (RFC 9865), so a cursor one replica issued is honoured by another.
CREATE TABLE service_keys (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL
);
