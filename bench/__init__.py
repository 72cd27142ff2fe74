"""The benchmark harness behind `make bench`: seeds a bench database, drives the
stack with wrk (REST through Envoy) and a grpc.aio client, compares Get and Update
with pgbench running the same work (get.sql, update.sql), and writes
docs/benchmarks.md."""
