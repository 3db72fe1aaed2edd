"""NOPS kernel agent SDK, standard library only.

- Client: the kernel's API with API-key or bearer authentication, RFC 9421 ``hmac-sha256``
  request signing, an Idempotency-Key on every POST, and retries with exponential backoff and
  full jitter honouring ``Retry-After`` (429, 502, 503, 504).
- Agent: registration (idempotent), heartbeats with jitter and load figures, metric hooks, API
  key rotation with grace (rotate, switch, confirm), graceful deregistration.
- InvocationServer: the agent's endpoint (``http.server``), reading the kernel's invocation
  headers and deadline, validating inputs against the capability's JSON Schema (a subset: see
  nops_sdk.schema) and answering RFC 9457 problems.
- signing: the RFC 9421 primitives (signature base, Content-Digest, HMAC).

See docs/sdk-python.md in the repository.
"""

from .agent import Agent, RotationError
from .client import ApiError, Attempt, Client, Response, api_key_id, current_traceparent
from .retry import NO_RETRY, RetryPolicy, parse_retry_after
from .schema import FieldError, validate
from .server import Capability, Invocation, InvocationError, InvocationRecord, InvocationServer, Reply, problem
from .signing import SigningError, SigningKey, content_digest, new_nonce, sign, signature_base, target_uri

__version__ = "0.1.0"

__all__ = [
    "Agent", "RotationError",
    "ApiError", "Attempt", "Client", "Response", "api_key_id", "current_traceparent",
    "NO_RETRY", "RetryPolicy", "parse_retry_after",
    "FieldError", "validate",
    "Capability", "Invocation", "InvocationError", "InvocationRecord", "InvocationServer", "Reply", "problem",
    "SigningError", "SigningKey", "content_digest", "new_nonce", "sign", "signature_base", "target_uri",
]
