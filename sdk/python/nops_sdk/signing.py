"""RFC 9421 HTTP Message Signatures with ``hmac-sha256``, as the NOPS kernel verifies them.

The kernel's rules are in docs/request-signing.md. A request to the kernel is signed over
``@method``, ``@target-uri``, ``content-digest`` (RFC 9530 ``sha-256``, when there is a body)
and ``content-type`` (when the request has one), with the parameters ``created``, ``keyid``,
``nonce`` and ``tag="nops-request"``, under the label ``nops``. The HMAC key is the decoded
32 bytes of the secret the kernel returned, never its base64 text.

``signature_base`` is general enough to recompute the RFC's own Appendix B examples (any derived
component of the list below, any header field), which the tests do with the same vector files
as the kernel's Go tests.

Supported derived components: ``@method``, ``@target-uri``, ``@authority``, ``@scheme``,
``@path``, ``@query``. Component parameters (``;sf``, ``;key``, …) are not supported.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

#: The label of the signature the SDK adds (any label works; the kernel's signer uses ``nops``).
LABEL = "nops"
#: The ``tag`` parameter the kernel requires.
TAG = "nops-request"
#: The only algorithm the standard library can sign with (Ed25519 would need a third-party package).
ALG_HMAC_SHA256 = "hmac-sha256"


class SigningError(ValueError):
    """A request cannot be signed (unknown component, field missing, bad key)."""


@dataclass(frozen=True)
class SigningKey:
    """An ``hmac-sha256`` request key of the kernel (``/v1/request-keys``).

    ``key_id`` is the ``rk_…`` ID, the signature's ``keyid``; ``secret`` the decoded HMAC key.
    """

    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def from_api(cls, key_id: str, secret_b64: str) -> "SigningKey":
        """Build a key from the ``id`` and ``secret`` (standard base64) the API returned."""
        try:
            raw = base64.b64decode(secret_b64, validate=True)
        except (ValueError, TypeError) as exc:
            raise SigningError("the secret is not standard base64") from exc
        if not raw:
            raise SigningError("the secret is empty")
        return cls(key_id=key_id, secret=raw)


def new_nonce() -> str:
    """Return 16 random bytes in unpadded base64url, a fresh nonce for one signature."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def content_digest(body: bytes) -> str:
    """Return the RFC 9530 ``Content-Digest`` value of body: ``sha-256=:<base64>:``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def target_uri(url: str) -> str:
    """Return the ``@target-uri`` of url: lower-case scheme and host, default port dropped,
    path (as sent, percent-encoding kept, ``/`` when empty) and query."""
    u = urllib.parse.urlsplit(url)
    return "%s://%s%s" % (u.scheme.lower(), _authority(u), _path_query(u))


def _authority(u: urllib.parse.SplitResult) -> str:
    host = (u.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = "[" + host + "]"
    port = u.port
    if port is None or (u.scheme.lower(), port) in (("http", 80), ("https", 443)):
        return host
    return "%s:%d" % (host, port)


def _path_query(u: urllib.parse.SplitResult) -> str:
    path = u.path or "/"
    return path + ("?" + u.query if u.query else "")


def _sf_string(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) > 0x7E for c in value):
        raise SigningError("parameter value %r is not printable ASCII" % value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def signature_params(components: Sequence[str], params: Mapping[str, object]) -> str:
    """Serialise the ``@signature-params`` value (RFC 8941 inner list with parameters).

    params keep their order; ints serialise as integers, strs as strings.
    """
    out = "(" + " ".join(_sf_string(c) for c in components) + ")"
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SigningError("parameter %s must be an int or a str" % name)
        out += ";%s=%s" % (name, value if isinstance(value, int) else _sf_string(value))
    return out


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def signature_base(method: str, url: str, headers: Mapping[str, str], components: Sequence[str],
                   params_value: str) -> str:
    """Return the RFC 9421 signature base of a request.

    ``params_value`` is the ``@signature-params`` value, exactly as it appears in
    ``Signature-Input`` after ``label=``. Lines are joined by LF with no final LF.
    """
    u = urllib.parse.urlsplit(url)
    lines: List[str] = []
    seen = set()
    for c in components:
        if c in seen:
            raise SigningError("component %s listed twice" % c)
        seen.add(c)
        if c != c.lower() or ";" in c:
            raise SigningError("component %r is not supported" % c)
        if c == "@method":
            value = method.upper()
        elif c == "@target-uri":
            value = target_uri(url)
        elif c == "@authority":
            value = _authority(u)
        elif c == "@scheme":
            value = u.scheme.lower()
        elif c == "@path":
            value = u.path or "/"
        elif c == "@query":
            value = "?" + u.query
        elif c.startswith("@"):
            raise SigningError("derived component %s is not supported" % c)
        else:
            v = _header(headers, c)
            if v is None:
                raise SigningError("covered field %s is not in the request" % c)
            value = v.strip()
        lines.append('"%s": %s' % (c, value))
    lines.append('"@signature-params": ' + params_value)
    return "\n".join(lines)


def hmac_sha256(secret: bytes, base: str) -> str:
    """Return the base64 HMAC-SHA256 of the signature base under secret."""
    return base64.b64encode(hmac.new(secret, base.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


def sign(method: str, url: str, headers: Dict[str, str], body: Optional[bytes], key: SigningKey,
         created: Optional[int] = None, nonce: Optional[str] = None, label: str = LABEL) -> Dict[str, str]:
    """Sign a request for the kernel; headers is updated in place and returned.

    Adds ``Content-Digest`` when body is not empty, then ``Signature-Input`` and ``Signature``
    covering ``@method``, ``@target-uri``, ``content-digest`` (with a body) and ``content-type``
    (when headers has one). created defaults to now (Unix seconds), nonce to a fresh random one:
    sign each attempt of a request anew, retries included.
    """
    if not key.key_id:
        raise SigningError("the key has no ID")
    components = ["@method", "@target-uri"]
    if body:
        headers["Content-Digest"] = content_digest(body)
        components.append("content-digest")
    if _header(headers, "content-type") is not None:
        components.append("content-type")
    params = signature_params(components, {
        "created": int(time.time()) if created is None else int(created),
        "keyid": key.key_id,
        "nonce": new_nonce() if nonce is None else nonce,
        "tag": TAG,
    })
    base = signature_base(method, url, headers, components, params)
    headers["Signature-Input"] = "%s=%s" % (label, params)
    headers["Signature"] = "%s=:%s:" % (label, hmac_sha256(key.secret, base))
    return headers
