"""The benchmark harness behind `make bench`: seeds a bench database, drives the
stack with wrk (REST through Envoy) and a grpc.aio client, compares updates with
a raw-psycopg baseline, and writes docs/benchmarks.md."""
