"""A caller's deadline, which bounds the database work of its call.

Transport knows the deadline (what a gRPC call has left); storage enforces it
on each transaction it runs for the call. The service layer hands it from one
to the other, so that transport reaches no storage.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from server.storage.database import deadline_in


@contextmanager
def caller_deadline(seconds: float | None) -> Iterator[None]:
    """Bounds the database work started inside to `seconds` from now (None: no bound)."""
    with deadline_in(seconds):
        yield
