-- Anchor task engine: the queue table and the per-attempt log.
-- Applied with Migrator(anchor/tasks/sql, table="anchor_framework_migrations").

CREATE TABLE anchor_tasks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name             text        NOT NULL,
    queue            text        NOT NULL DEFAULT 'default',
    params           jsonb       NOT NULL DEFAULT '{}',
    state            text        NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority         integer     NOT NULL DEFAULT 0,          -- higher runs first
    run_at           timestamptz NOT NULL DEFAULT now(),      -- not before (delay, retry backoff)
    attempts         integer     NOT NULL DEFAULT 0,          -- runs started (incremented at claim)
    max_attempts     integer     NOT NULL DEFAULT 1           -- -1 = unlimited
        CHECK (max_attempts = -1 OR max_attempts >= 1),
    -- {"intervals": [seconds...], "backoff": bool, "max_interval": seconds|null, "jitter": fraction}
    retry_policy     jsonb       NOT NULL DEFAULT '{}',
    timeout          interval,
    unique_tag       text,
    serial_key       text,
    labels           text[]      NOT NULL DEFAULT '{}',
    parent_id        bigint,
    lease_owner      text,                                    -- worker id holding the run
    lease_expires_at timestamptz,                             -- rescued back to pending after this
    result           jsonb,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,                             -- latest attempt's start
    finished_at      timestamptz
);

-- The claim: pending tasks of a queue, highest priority first, then oldest due, then FIFO.
-- Partial, so finished rows (the bulk of a busy table) never enter it.
CREATE INDEX anchor_tasks_claim ON anchor_tasks (queue, priority DESC, run_at, id)
    WHERE state = 'pending';

-- Deduplication: at most one ACTIVE task (pending or running) per unique_tag. Once a task
-- completes, fails or is cancelled, the tag is free again and a new task may take it.
-- Enqueue relies on this exact predicate with INSERT ... ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX anchor_tasks_unique_tag ON anchor_tasks (unique_tag)
    WHERE unique_tag IS NOT NULL AND state IN ('pending', 'running');

-- The rescuer looks for running tasks whose lease has expired.
CREATE INDEX anchor_tasks_lease ON anchor_tasks (lease_expires_at) WHERE state = 'running';

-- Serial keys: one running task per key, in enqueue order.
CREATE INDEX anchor_tasks_serial ON anchor_tasks (serial_key, id)
    WHERE serial_key IS NOT NULL AND state IN ('pending', 'running');

CREATE INDEX anchor_tasks_parent ON anchor_tasks (parent_id) WHERE parent_id IS NOT NULL;

-- One row per failed attempt (error, timeout, lease expiry): every attempt's error is kept.
CREATE TABLE anchor_task_attempts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id     bigint      NOT NULL REFERENCES anchor_tasks (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('error', 'timeout', 'lease_expired')),
    error       text        NOT NULL,
    worker      text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX anchor_task_attempts_task ON anchor_task_attempts (task_id, attempt);
