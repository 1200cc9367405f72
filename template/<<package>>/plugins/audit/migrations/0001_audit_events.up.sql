CREATE TABLE audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('signed_in', 'sign_in_failed', 'task_failed')),
    user_id bigint,  -- the account concerned, when there is one
    subject text NOT NULL,  -- the name tried, or the task's name
    detail text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_events_user_idx ON audit_events (user_id, id DESC) WHERE user_id IS NOT NULL;
