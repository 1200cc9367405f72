"""The SQL a worker runs on the rows it leases: claim, heartbeat, complete, fail, release, rescue.

Every write after the claim is fenced with `state = 'running' AND lease_owner = <worker>
AND attempts = <the attempt it claimed>`: a worker whose lease was rescued, or whose task
was cancelled, changes nothing (0 rows), so a late result can never overwrite a newer one.
"""

from __future__ import annotations

# One statement: pick due pending tasks (priority, then due time, then FIFO), skipping rows
# other workers are claiming, and lease them. A serial-key task is eligible only when no
# task with its key is running and none is pending ahead of it.
CLAIM = """
-- One index-ordered scan per queue (anchor_tasks_claim: queue, priority DESC, run_at, id):
-- `queue = ANY(...)` in a single scan would read and sort every pending row instead.
-- A task with labels runs only on a worker that has every one of them ($6).
WITH picked AS (
    SELECT c.id
    FROM unnest($1::text[]) AS q(queue)
    CROSS JOIN LATERAL (
        SELECT t.id, t.priority, t.run_at
        FROM anchor_tasks t
        WHERE t.state = 'pending' AND t.queue = q.queue AND t.name = ANY($2::text[])
          AND t.run_at <= now() AND t.labels <@ $6::text[]
          AND (t.serial_key IS NULL OR NOT EXISTS (
              SELECT 1 FROM anchor_tasks s
              WHERE s.serial_key = t.serial_key AND s.state IN ('pending', 'running')
                AND (s.state = 'running' OR s.id < t.id)))
        ORDER BY t.priority DESC, t.run_at, t.id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) c
    ORDER BY c.priority DESC, c.run_at, c.id
    LIMIT $3
)
UPDATE anchor_tasks t
SET state = 'running', attempts = t.attempts + 1, lease_owner = $4,
    lease_expires_at = now() + $5::interval, started_at = now()
FROM picked
WHERE t.id = picked.id
RETURNING t.id, t.name, t.params::text AS params, t.attempts, t.max_attempts,
          t.retry_policy::text AS retry_policy, extract(epoch FROM t.timeout)::float8 AS timeout
"""

# In the executor's own transaction, so its writes and the completion commit together.
COMPLETE_ONE = """
UPDATE anchor_tasks
SET state = 'completed', result = $4::text::jsonb, finished_at = clock_timestamp(),
    lease_owner = NULL, lease_expires_at = NULL
WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3
"""

# Buffered completions of executors that never queried, flushed in one statement.
COMPLETE_MANY = """
UPDATE anchor_tasks t
SET state = 'completed', result = c.result::jsonb, finished_at = clock_timestamp(),
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::bigint[], $2::int[], $3::text[]) AS c(id, attempts, result)
WHERE t.id = c.id AND t.state = 'running' AND t.lease_owner = $4 AND t.attempts = c.attempts
"""

# $4 is 'pending' (retry after $5) or 'failed'.
FAIL = """
UPDATE anchor_tasks
SET state = $4, run_at = clock_timestamp() + $5::interval, last_error = $6,
    lease_owner = NULL, lease_expires_at = NULL,
    finished_at = CASE WHEN $4 = 'failed' THEN clock_timestamp() END
WHERE id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3
"""

RECORD_ATTEMPT = """
INSERT INTO anchor_task_attempts (task_id, attempt, kind, error, worker)
VALUES ($1, $2, $3, $4, $5)
"""

APPEND_ERROR = "UPDATE anchor_tasks SET last_error = last_error || $2 WHERE id = $1"

HEARTBEAT = """
UPDATE anchor_tasks t
SET lease_expires_at = now() + $3::interval
FROM unnest($1::bigint[], $2::int[]) AS h(id, attempts)
WHERE t.id = h.id AND t.attempts = h.attempts AND t.state = 'running' AND t.lease_owner = $4
RETURNING t.id
"""

# Graceful stop: hand unfinished tasks back at once; the interrupted run does not count.
RELEASE = """
WITH released AS (
    UPDATE anchor_tasks t
    SET state = 'pending', attempts = t.attempts - 1, run_at = now(),
        lease_owner = NULL, lease_expires_at = NULL
    FROM unnest($1::bigint[], $2::int[]) AS r(id, attempts)
    WHERE t.id = r.id AND t.attempts = r.attempts AND t.state = 'running' AND t.lease_owner = $3
    RETURNING t.queue
)
SELECT count(pg_notify('anchor_tasks:' || queue, '')) FROM (SELECT DISTINCT queue FROM released) q
"""

# Leases that expired belong to dead or stuck workers: their attempt counts as failed
# ("lease expired") and the task goes back to pending, or to failed when attempts are spent.
RESCUE = """
WITH expired AS (
    SELECT id, lease_owner FROM anchor_tasks
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), moved AS (
    UPDATE anchor_tasks t
    SET state = CASE WHEN t.max_attempts = -1 OR t.attempts < t.max_attempts
                     THEN 'pending' ELSE 'failed' END,
        run_at = now(), last_error = 'lease expired',
        finished_at = CASE WHEN t.max_attempts = -1 OR t.attempts < t.max_attempts
                           THEN NULL ELSE clock_timestamp() END,
        lease_owner = NULL, lease_expires_at = NULL
    FROM expired
    WHERE t.id = expired.id
    RETURNING t.id, t.name, t.queue, t.params::text AS params, t.state, t.attempts,
              expired.lease_owner AS old_owner
), logged AS (
    INSERT INTO anchor_task_attempts (task_id, attempt, kind, error, worker)
    SELECT id, attempts, 'lease_expired',
           'lease expired (worker ' || coalesce(old_owner, '?') || ' stopped heartbeating)',
           old_owner
    FROM moved
)
SELECT id, name, queue, params, state FROM moved
"""
