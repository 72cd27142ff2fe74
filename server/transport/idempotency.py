"""The idempotency key a write call carries, if any."""

import hashlib

from google.protobuf.message import Message

from server.domain import idempotency
from server.domain.idempotency import IdempotencyKey
from server.transport.interceptors import Context, current_caller, metadata_value

# REST's `Idempotency-Key` header arrives as this metadata.
IDEMPOTENCY_KEY_METADATA = "idempotency-key"


def idempotency_key(context: Context, method: str, request: Message) -> IdempotencyKey | None:
    """The caller's key for this write, bound to a fingerprint of the method and request."""
    key = metadata_value(context, IDEMPOTENCY_KEY_METADATA)
    if key is None:
        return None
    fingerprint = hashlib.sha256(
        method.encode() + b"\0" + request.SerializeToString(deterministic=True)
    ).digest()
    return idempotency.idempotency_key(current_caller().org_id, key, fingerprint)
