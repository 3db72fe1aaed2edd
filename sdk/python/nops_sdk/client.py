"""HTTP client of the NOPS kernel API: authentication, RFC 9421 signing, retries.

Every request:

- carries the credential: ``X-API-Key`` (an API key ``nops_<keyid>_<secret>``) or
  ``Authorization: Bearer`` (an access token from ``POST /v1/auth/token``);
- is signed (RFC 9421, ``hmac-sha256``) when the client has a request key, anew for each attempt
  (fresh ``created`` and nonce: the kernel refuses a reused nonce);
- gets an ``Idempotency-Key`` when it is a POST (the same key for all its attempts), so a retry
  never does the work twice;
- is retried per the client's RetryPolicy (exponential backoff, full jitter, ``Retry-After``).

The credential can be switched at any time (API key rotation): requests already sent keep the
old one, later ones use the new one.

Connections are kept alive and reused: each thread has its own persistent connection to the
kernel (``http.client``), so a client shared by threads never interleaves two requests on one
connection. A request that fails on a reused connection before any answer came back (the
kernel closed the idle connection meanwhile) is sent again once on a new connection when it is
safe to repeat — an idempotent method, or a request with an ``Idempotency-Key`` — as Go's
net/http does. Redirects are never followed.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.error
import urllib.parse
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from .retry import RetryPolicy
from .signing import SigningKey, sign

#: The traceparent of the invocation being served on this thread (set by the invocation server),
#: sent on every request the client makes from inside a handler unless one is given explicitly.
current_traceparent: ContextVar[Optional[str]] = ContextVar("nops_current_traceparent", default=None)

#: The header the kernel adds to every answer to a request authenticated by an API key an
#: administrator required to be rotated (force-rotate): the RFC 3339 deadline.
ROTATE_BY_HEADER = "Nops-Api-Key-Rotate-By"

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


def _stale(exc: BaseException) -> bool:
    """Whether exc is how a kept-alive connection closed by the server fails: the request could
    not be written, or the connection ended before any byte of an answer."""
    return isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
                            ConnectionAbortedError, http.client.CannotSendRequest))


@dataclass
class Response:
    """An HTTP answer of the kernel."""

    status: int
    headers: Dict[str, str]
    body: bytes
    attempts: int = 1

    def header(self, name: str) -> Optional[str]:
        """Return the value of header name (case-insensitive), or None."""
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        """Decode the body as JSON (None for an empty body)."""
        return json.loads(self.body) if self.body else None


class ApiError(Exception):
    """The kernel (or an agent through it) answered with an error status.

    ``problem`` is the RFC 9457 problem when the answer was ``application/problem+json``.
    """

    def __init__(self, response: Response) -> None:
        self.response = response
        self.status = response.status
        self.problem: Dict[str, Any] = {}
        ctype = (response.header("Content-Type") or "").split(";")[0].strip()
        if ctype == "application/problem+json":
            try:
                p = response.json()
                if isinstance(p, dict):
                    self.problem = p
            except ValueError:
                pass
        detail = self.problem.get("detail") or self.problem.get("title") or response.body[:200].decode("utf-8", "replace")
        super().__init__("HTTP %d: %s" % (response.status, detail))

    @property
    def code(self) -> Optional[str]:
        """The problem's ``code`` (``rate_limited``, ``unauthenticated``, …), if any."""
        return self.problem.get("code")


@dataclass
class Attempt:
    """One attempt of a request, as passed to the ``on_attempt`` hook."""

    method: str
    path: str
    number: int
    status: Optional[int]  # None when the attempt failed in transport
    error: Optional[BaseException]
    retry_after: Optional[str]
    delay: Optional[float]  # the wait before the next attempt; None when none follows


def api_key_id(api_key: str) -> str:
    """Return the key ID (``ak…``) of a raw API key ``nops_<keyid>_<secret>``."""
    if not api_key.startswith("nops_") or api_key.count("_") != 2:
        raise ValueError("not a NOPS API key")
    return api_key.split("_")[1]


@dataclass
class Client:
    """A client of one kernel.

    base_url is the kernel's URL as the client reaches it (``https://nops.example.com``); it is
    also what is signed. Give api_key or bearer_token; signing_key to sign requests (required by
    tenants whose perimeter demands signatures). tenant names the tenant to act in, for a
    SUPER_ADMIN credential. on_attempt is called after every attempt (metrics, logs, tests).
    """

    base_url: str
    api_key: Optional[str] = field(default=None, repr=False)
    bearer_token: Optional[str] = field(default=None, repr=False)
    signing_key: Optional[SigningKey] = field(default=None, repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 30.0
    tenant: Optional[str] = None
    ssl_context: Optional[ssl.SSLContext] = None
    user_agent: str = "nops-sdk-python/0.1.0"
    on_attempt: Optional[Callable[[Attempt], None]] = None

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self._lock = threading.Lock()
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an absolute http or https URL, got %r" % self.base_url)
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._local = threading.local()  # this thread's kept-alive connection
        #: Connections opened so far (for tests and metrics): fewer than requests when reused.
        self.connections_opened = 0
        #: Called with the value of ``Nops-Api-Key-Rotate-By`` when an answer to a request sent
        #: with the client's current API key carries it (an Agent rotates the key then).
        self.on_rotate_by: Optional[Callable[[str], None]] = None

    # Credentials -------------------------------------------------------------------------

    def credentials(self) -> Dict[str, Optional[Any]]:
        """Return the current credentials (api_key, bearer_token, signing_key) as one snapshot."""
        with self._lock:
            return {"api_key": self.api_key, "bearer_token": self.bearer_token, "signing_key": self.signing_key}

    def set_api_key(self, api_key: str) -> None:
        """Use api_key from the next request on (requests in flight keep the previous one)."""
        with self._lock:
            self.api_key = api_key
            self.bearer_token = None

    def set_bearer_token(self, token: str) -> None:
        """Use an access token from the next request on."""
        with self._lock:
            self.bearer_token = token
            self.api_key = None

    def set_signing_key(self, key: Optional[SigningKey]) -> None:
        """Sign with key from the next request on (None: stop signing)."""
        with self._lock:
            self.signing_key = key

    # Requests ----------------------------------------------------------------------------

    def url(self, path: str, query: Optional[Mapping[str, Any]] = None) -> str:
        """Return the absolute URL of path with query (and the client's tenant, if any)."""
        q: Dict[str, Any] = {}
        if self.tenant and not path.startswith(("/v1/tenants", "/v1/auth/")):
            q["tenant"] = self.tenant
        if query:
            q.update({k: v for k, v in query.items() if v is not None})
        u = self.base_url + path
        if q:
            u += "?" + urllib.parse.urlencode(q)
        return u

    def request(self, method: str, path: str, body: Any = None, *, query: Optional[Mapping[str, Any]] = None,
                headers: Optional[Mapping[str, str]] = None, idempotency_key: Optional[str] = None,
                raw_body: Optional[bytes] = None, content_type: str = "application/json",
                retry: Optional[RetryPolicy] = None, check: bool = True,
                credentials: Optional[Mapping[str, Any]] = None) -> Response:
        """Send a request, retrying per the policy, and return the final answer.

        body is JSON-encoded (raw_body is sent as is). A POST gets an Idempotency-Key (the one
        given, or a random UUID) shared by its attempts. With check (the default) an error status
        raises ApiError; transport failures raise OSError or http.client.HTTPException once the
        attempts are exhausted. credentials overrides the client's for this request only.
        """
        method = method.upper()
        policy = retry or self.retry
        url = self.url(path, query)
        data: Optional[bytes] = raw_body
        if data is None and body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        base_headers: Dict[str, str] = {"Accept": "application/json, application/problem+json", "User-Agent": self.user_agent}
        if data is not None:
            base_headers["Content-Type"] = content_type
        if method == "POST":
            base_headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        elif idempotency_key:
            base_headers["Idempotency-Key"] = idempotency_key
        tp = current_traceparent.get()
        if tp:
            base_headers["traceparent"] = tp
        if headers:
            base_headers.update(headers)
        retryable = method in _IDEMPOTENT or "Idempotency-Key" in base_headers
        attempts = max(1, policy.max_attempts if retryable else 1)
        number = 0
        while True:
            number += 1
            creds = dict(credentials) if credentials is not None else self.credentials()
            h = dict(base_headers)
            if creds.get("api_key"):
                h["X-API-Key"] = str(creds["api_key"])
            elif creds.get("bearer_token"):
                h["Authorization"] = "Bearer " + str(creds["bearer_token"])
            key = creds.get("signing_key")
            if isinstance(key, SigningKey):
                sign(method, url, h, data, key)
            resp: Optional[Response] = None
            err: Optional[BaseException] = None
            try:
                resp = self._send(method, url, h, data)
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                err = exc
            if resp is not None:
                self._notice_rotate_by(resp, creds.get("api_key"))
            retry_after = resp.header("Retry-After") if resp is not None else None
            again = number < attempts and (err is not None or (resp is not None and resp.status in policy.statuses))
            delay = policy.delay(number, resp.headers if resp is not None else None) if again else None
            if self.on_attempt is not None:
                self.on_attempt(Attempt(method, path, number, resp.status if resp else None, err, retry_after, delay))
            if delay is None:
                if err is not None:
                    raise err
                assert resp is not None
                resp.attempts = number
                if check and resp.status >= 400:
                    raise ApiError(resp)
                return resp
            policy.sleep(delay)

    def _notice_rotate_by(self, resp: Response, sent_with: Any) -> None:
        """Pass on the key rotation deadline an answer announces, when the request was sent with
        the client's current API key (an answer to one sent before a rotation says nothing about
        the new secret)."""
        by = resp.header(ROTATE_BY_HEADER)
        listener = self.on_rotate_by
        if not by or listener is None or not sent_with:
            return
        with self._lock:
            current = self.api_key
        if sent_with == current:
            listener(by)

    def _send(self, method: str, url: str, headers: Mapping[str, str], data: Optional[bytes]) -> Response:
        parts = urllib.parse.urlsplit(url)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        replayable = method in _IDEMPOTENT or "Idempotency-Key" in headers
        conn, reused = self._connection()
        try:
            return self._exchange(conn, method, target, headers, data)
        except (http.client.HTTPException, OSError) as exc:
            self._drop(conn)
            # A kept-alive connection the kernel closed while it was idle fails before any answer:
            # send the request again on a new connection, once, when repeating it is safe.
            if not (reused and replayable and _stale(exc)):
                raise
        conn, _ = self._connection()
        try:
            return self._exchange(conn, method, target, headers, data)
        except (http.client.HTTPException, OSError):
            self._drop(conn)
            raise

    def _exchange(self, conn: http.client.HTTPConnection, method: str, target: str,
                  headers: Mapping[str, str], data: Optional[bytes]) -> Response:
        h = dict(headers)
        if data is None and method in ("POST", "PUT", "PATCH"):
            h["Content-Length"] = "0"
        conn.request(method, target, body=data, headers=h)
        r = conn.getresponse()
        body = r.read()
        if r.will_close:
            self._drop(conn)
        return Response(r.status, dict(r.getheaders()), body)

    def _connection(self) -> "tuple[http.client.HTTPConnection, bool]":
        """Return this thread's connection and whether it served a request before."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        if self._scheme == "https":
            ctx = self.ssl_context or ssl.create_default_context()
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._local.conn = conn
        with self._lock:
            self.connections_opened += 1
        return conn, False

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    def close(self) -> None:
        """Close this thread's kept-alive connection (others close with their threads)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)

    # API ---------------------------------------------------------------------------------

    def whoami(self, credentials: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``GET /v1/auth/whoami``: the caller's subject, tenant, roles and scopes."""
        return self.request("GET", "/v1/auth/whoami", credentials=credentials).json()

    def register_agent(self, spec: Mapping[str, Any], idempotency_key: Optional[str] = None) -> Response:
        """``POST /v1/agents``; 201 with the agent (ApiError 409 when the name is taken)."""
        return self.request("POST", "/v1/agents", dict(spec), idempotency_key=idempotency_key)

    def get_agent(self, agent_id: str) -> Response:
        """``GET /v1/agents/{id}`` (the ETag header carries the revision)."""
        return self.request("GET", "/v1/agents/" + urllib.parse.quote(agent_id, safe=""))

    def list_agents(self, **query: Any) -> List[Dict[str, Any]]:
        """``GET /v1/agents``, every page; query: capability, selector, status."""
        items: List[Dict[str, Any]] = []
        cursor: Optional[str] = None
        while True:
            page = self.request("GET", "/v1/agents", query=dict(query, limit=100, cursor=cursor)).json()
            items.extend(page.get("items") or [])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    def update_agent(self, agent_id: str, spec: Mapping[str, Any], etag: str) -> Response:
        """``PUT /v1/agents/{id}`` with If-Match."""
        return self.request("PUT", "/v1/agents/" + urllib.parse.quote(agent_id, safe=""), dict(spec), headers={"If-Match": etag})

    def deregister_agent(self, agent_id: str) -> None:
        """``DELETE /v1/agents/{id}``."""
        self.request("DELETE", "/v1/agents/" + urllib.parse.quote(agent_id, safe=""))

    def heartbeat(self, agent_id: str, load: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``POST /v1/agents/{id}/heartbeat`` with load figures; returns the agent's status."""
        return self.request("POST", "/v1/agents/%s/heartbeat" % urllib.parse.quote(agent_id, safe=""), dict(load or {})).json()

    def invoke(self, capability: str, payload: Any = None, *, timeout_ms: Optional[int] = None,
               traceparent: Optional[str] = None, idempotency_key: Optional[str] = None,
               check: bool = True) -> Response:
        """``POST /v1/invoke/{capability}``: call a capability of the tenant's agents.

        payload is sent as JSON; timeout_ms becomes ``Nops-Timeout-Ms``; traceparent (else the one
        of the invocation being served) is passed on.
        """
        h: Dict[str, str] = {}
        if timeout_ms is not None:
            h["Nops-Timeout-Ms"] = str(int(timeout_ms))
        if traceparent:
            h["traceparent"] = traceparent
        return self.request("POST", "/v1/invoke/" + urllib.parse.quote(capability, safe=""),
                            {} if payload is None else payload, headers=h, idempotency_key=idempotency_key, check=check)

    def create_api_key(self, name: str, role: str, **extra: Any) -> Dict[str, Any]:
        """``POST /v1/api-keys``; the answer's ``secret`` is shown this once."""
        return self.request("POST", "/v1/api-keys", dict(extra, name=name, role=role)).json()

    def rotate_api_key(self, key_id: str, grace_period: Optional[str] = None) -> Dict[str, Any]:
        """``POST /v1/api-keys/{id}/rotate``: a new secret; the old one works for grace_period."""
        body = {"grace_period": grace_period} if grace_period else None
        return self.request("POST", "/v1/api-keys/%s/rotate" % urllib.parse.quote(key_id, safe=""), body).json()

    def create_request_key(self, name: str = "sdk", agent_id: Optional[str] = None) -> SigningKey:
        """``POST /v1/request-keys`` (hmac-sha256) and return it as a SigningKey."""
        body: Dict[str, Any] = {"alg": "hmac-sha256", "name": name}
        if agent_id:
            body["agent_id"] = agent_id
        out = self.request("POST", "/v1/request-keys", body).json()
        return SigningKey.from_api(out["id"], out["secret"])


def parse_problem(body: Union[bytes, str]) -> Dict[str, Any]:
    """Decode an RFC 9457 problem body (empty dict when it is not one)."""
    try:
        p = json.loads(body)
    except ValueError:
        return {}
    return p if isinstance(p, dict) else {}
