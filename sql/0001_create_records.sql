-- The records table, as the original service had it, with its defects fixed.
--
-- citext: email lookups, uniqueness and ordering are case-insensitive, as in the original
-- (`ALICE@x.com` and `alice@x.com` are one record). citext is a trusted extension since
-- PostgreSQL 13, so the database owner can create it without superuser rights.
CREATE EXTENSION IF NOT EXISTS citext;

CREATE TABLE IF NOT EXISTS records (
    -- int4 from a sequence, the primary key: GET /user/{id} looks records up through its index.
    id    serial PRIMARY KEY,
    -- UNIQUE gives the second (and last) index: lookups, upserts (ON CONFLICT (email)) and the
    -- ordered listing (ORDER BY email, keyset `email > $1`) all use it. No third index.
    email citext NOT NULL,
    -- At most 100 characters (characters, not bytes, as varchar counts them). The service checks
    -- first and answers 400; the type is the backstop (SQLSTATE 22001).
    text  varchar(100),
    CONSTRAINT records_email_key UNIQUE (email),
    -- A backstop for the service's own validation (src/records/email.rs), which is stricter:
    -- no whitespace or control characters, one @, a dot in the domain, at most 254 characters.
    CONSTRAINT records_email_check CHECK (
        char_length(email) <= 254
        AND email::text ~ '^[^@[:space:][:cntrl:]]+@[^@[:space:][:cntrl:]]+\.[^@[:space:][:cntrl:]]+$'
    )
);
