-- Anchor auth: users, organisations, sign-in sessions (the macaroon root keys) and the
-- sign-in throttle. Applied with Migrator(anchor/auth/sql, table="anchor_auth_migrations").

CREATE TABLE anchor_users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text        NOT NULL,
    password_hash  text        NOT NULL,                      -- argon2id, PHC string
    default_org_id bigint,                                    -- FK added below (cycle with orgs)
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- Names are unique whatever their case: "Alice" and "alice" are one account.
CREATE UNIQUE INDEX anchor_users_name ON anchor_users (lower(name));

CREATE TABLE anchor_orgs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL,
    owner_id   bigint      REFERENCES anchor_users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE anchor_users ADD CONSTRAINT anchor_users_default_org
    FOREIGN KEY (default_org_id) REFERENCES anchor_orgs (id) ON DELETE SET NULL;

CREATE TABLE anchor_org_members (
    org_id     bigint      NOT NULL REFERENCES anchor_orgs (id) ON DELETE CASCADE,
    user_id    bigint      NOT NULL REFERENCES anchor_users (id) ON DELETE CASCADE,
    role       text        NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, user_id)
);

CREATE INDEX anchor_org_members_user ON anchor_org_members (user_id);

-- One row per sign-in session. The macaroon root key is HMAC(server secret, id, salt): the
-- salt alone (a database dump) cannot sign tokens. Revoked and expired rows can be deleted.
CREATE TABLE anchor_auth_keys (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES anchor_users (id) ON DELETE CASCADE,
    salt       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX anchor_auth_keys_user ON anchor_auth_keys (user_id) WHERE revoked_at IS NULL;
CREATE INDEX anchor_auth_keys_expires ON anchor_auth_keys (expires_at);

-- Failed sign-ins per lower(name), known or not, shared by every API replica.
CREATE TABLE anchor_auth_throttle (
    name_key        text        PRIMARY KEY,                  -- lower(name)
    failures        integer     NOT NULL,                     -- attempts since window_start without a success
    window_start    timestamptz NOT NULL,
    last_failure_at timestamptz NOT NULL,
    locked_until    timestamptz
);
