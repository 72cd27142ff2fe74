"""The service layer: each use case of the API as one transaction.

Transport calls in with domain values; a service opens the transaction,
reads the clock, claims idempotency keys, lets the domain decide, and has
storage read and write rows. Nothing here knows protobuf or gRPC.
"""
