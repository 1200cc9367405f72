-- Anchor task engine: durable cron schedules, one row per task with a `cronjob` in tasks.yaml.
-- CronScheduler registers the rows at startup and fires a tick by moving `next_run_at` on with
-- a compare-and-set in the same transaction as the enqueue, so each tick is enqueued exactly
-- once however many schedulers run.

CREATE TABLE anchor_cron_schedules (
    name         text        PRIMARY KEY,              -- the task name
    expression   text        NOT NULL,                 -- 5 fields, or 6 with seconds first (UTC)
    next_run_at  timestamptz NOT NULL,                 -- the next tick to enqueue
    enabled      boolean     NOT NULL DEFAULT true,    -- false once the task has no cron
    last_run_at  timestamptz,                          -- run_at of the latest enqueued tick
    last_task_id bigint,                               -- the task enqueued for it
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()    -- last (re-)registration or disabling
);

CREATE INDEX anchor_cron_schedules_due ON anchor_cron_schedules (next_run_at) WHERE enabled;
